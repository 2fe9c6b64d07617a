"""`gptcli eval`: metric values against hand-computed ones and the packages' own functions, perplexity against
the model's loss computed here, each task end to end on tiny models, --predictions without a model, resume."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from gptcli.services import metrics
from tests import tiny_models

EXACT = ["--label-template", "{}"]  # the tiny embedder: a text equal to a label's description matches it
LABELS = ("blue river", "red house", "two dogs")
# (text, expected label): the embedder predicts the text itself, so records 3 and 5 are wrong on purpose.
ROWS = [("red house", "red house"), ("blue river", "blue river"), ("two dogs", "two dogs"),
        ("red house", "blue river"), ("blue river", "blue river"), ("two dogs", "red house")]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def gold(tmp_path):
    return _jsonl(tmp_path / "gold.jsonl", [{"id": f"r{i}", "text": t, "label": l} for i, (t, l) in enumerate(ROWS)])


# ---------------------------------------------------------------- metrics, by hand


def test_classification_report_matches_the_hand_computed_confusion_matrix():
    references = [label for _text, label in ROWS]
    predictions = [text for text, _label in ROWS]
    report = metrics.classification_report(references, predictions, (*LABELS, "never seen"))
    # rows expected, columns predicted: blue river 2 right, 1 taken for red house; red house 1 right,
    # 1 taken for two dogs; two dogs 1 right.
    assert report.confusion == ((2, 1, 0, 0), (0, 1, 1, 0), (0, 0, 1, 0), (0, 0, 0, 0))
    assert report.accuracy == pytest.approx(4 / 6)
    blue, red, dogs, never = (report.per_label[label] for label in (*LABELS, "never seen"))
    assert (blue.precision, blue.recall, blue.f1, blue.support) == pytest.approx((1.0, 2 / 3, 0.8, 3))
    assert (red.precision, red.recall, red.f1, red.support) == pytest.approx((0.5, 0.5, 0.5, 2))
    assert (dogs.precision, dogs.recall, dogs.f1, dogs.support) == pytest.approx((0.5, 1.0, 2 / 3, 1))
    assert (never.precision, never.recall, never.f1, never.support) == (0.0, 0.0, 0.0, 0)
    assert report.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)  # a label that never occurs is not averaged
    with pytest.raises(ValueError, match="'other' is not among"):
        metrics.classification_report(["a", "other"], ["a", "a"], ("a", "b"))


def test_rouge_matches_hand_counts_and_the_packages_documented_example():
    scores = metrics.rouge(["the cat sat"], ["the cat sat on the mat"])
    # unigrams 3 of 3 predicted, 3 of 6 expected; bigrams 2 of 2 and 2 of 5; longest common run 3.
    assert scores["rouge1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert scores["rouge2"] == pytest.approx(2 * 1 * 0.4 / 1.4)
    assert scores["rougeL"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert metrics.rouge(["cats running"], ["cat runs"])["rouge1"] == 1.0  # stemmed: cat run, both
    # rouge-score's README: 'The quick brown fox jumps over the lazy dog' against 'The quick brown dog jumps
    # on the log.': 6 shared words, 6/8 precision and 6/9 recall.
    documented = metrics.rouge(["The quick brown dog jumps on the log."],
                               ["The quick brown fox jumps over the lazy dog"])
    assert documented["rouge1"] == pytest.approx(2 * 0.75 * (6 / 9) / (0.75 + 6 / 9))
    # Two records: the mean of their F-measures.
    assert metrics.rouge(["the cat sat", "a b"], ["the cat sat on the mat", "x y"])["rouge1"] == pytest.approx(1 / 3)


def test_chrf_and_bleu_are_sacrebleus_corpus_scores_with_their_signature():
    import sacrebleu

    hypotheses = ["the cat sat on the mat", "a dog ran home"]
    references = ["the cat sat on a mat", "the dog ran home"]
    chrf, bleu = metrics.chrf(hypotheses, references), metrics.bleu(hypotheses, references)
    assert chrf.score == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references]).score)
    assert bleu.score == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert "nc:6" in chrf.signature and "version:2.6.0" in chrf.signature
    assert "tok:13a" in bleu.signature and "nrefs:1" in bleu.signature
    chinese = metrics.bleu(["猫坐在垫子上"], ["猫坐在垫子上"], metrics.bleu_tokenizer("zh"))
    assert chinese.score == pytest.approx(100.0) and "tok:zh" in chinese.signature
    assert metrics.bleu_tokenizer("de") is None


def test_mean_loss_weights_texts_by_their_tokens_and_perplexity_is_its_exp():
    assert metrics.mean_loss([1.0, 4.0], [3, 1]) == pytest.approx(7 / 4)
    assert metrics.mean_loss([2.0, 9.0], [2, 0]) == 2.0  # a text with no token weighs nothing
    assert metrics.perplexity(7 / 4) == pytest.approx(math.exp(1.75))
    assert metrics.perplexity(1e6) == math.inf
    with pytest.raises(ValueError):
        metrics.mean_loss([1.0], [0])


# ---------------------------------------------------------------- perplexity against the model itself


def _direct_loss_sums(folder, texts):
    """Summed next-token loss and the tokens scored, per text, straight from transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    found = []
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss.item()  # the mean over the n - 1 predicted tokens
        found.append((loss * (ids.shape[1] - 1), ids.shape[1] - 1))
    return found


def test_eval_perplexity_is_exp_of_the_loss_the_model_gives(cli, tiny_llama, tmp_path):
    texts = ["the cat sat on the mat.", "the dog ran to the big house by the river and the small tree.", "hello"]
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(texts) + "\n")
    result = cli("eval", "perplexity", "--data", data, "-m", tiny_llama, "--dtype", "float32", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    direct = _direct_loss_sums(tiny_llama, texts)
    tokens = sum(count for _sum, count in direct)
    loss = sum(total for total, _count in direct) / tokens
    assert report["tokens"] == tokens and report["count"] == 3
    assert report["mean_loss"] == pytest.approx(loss, abs=1e-5)
    assert report["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    table = cli("eval", "perplexity", "--data", data, "-m", tiny_llama, "--dtype", "float32")
    assert table.stdout.splitlines()[1].split() == ["tokens", str(tokens)]
    assert table.stdout.splitlines()[3].split() == ["perplexity", f"{report['perplexity']:.4f}"]


def test_a_text_longer_than_the_context_is_scored_in_windows_every_token_once(tiny_llama):
    import torch

    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.services.perplexity import PerplexityParams, token_losses

    lm = load_model(LoadOptions(str(tiny_llama), dtype="float32"), accept=(CAUSAL_LM,), command="eval")
    long_text = " ".join(tiny_models.corpus(40, seed=3))
    ids = lm.tokenizer(long_text)["input_ids"]
    assert len(ids) > 2 * lm.context_length
    short = ["the cat sat.", "a dog ran to the sea."]
    alone = list(token_losses(lm, [long_text], PerplexityParams(batch_size=1)))[0]
    batched = list(token_losses(lm, [short[0], long_text, short[1]], PerplexityParams(batch_size=8)))
    assert alone.tokens == len(ids) - 1 and alone.windows > 2  # nothing cut, nothing scored twice
    assert batched[1].loss == pytest.approx(alone.loss, abs=1e-5)  # the batch does not change a text's loss
    # The same windows by hand: 128 tokens, moving on by 64, each scoring the tokens not scored before.
    total, scored_to, begin = 0.0, 1, 0
    while scored_to < len(ids):
        end = min(begin + 128, len(ids))
        window = torch.tensor([ids[begin:end]])
        with torch.no_grad():
            logits = lm.model(input_ids=window).logits[0].float()
        first = scored_to - begin
        total += torch.nn.functional.cross_entropy(logits[first - 1:-1], window[0, first:], reduction="sum").item()
        scored_to, begin = end, begin + 64
    assert alone.loss == pytest.approx(total / (len(ids) - 1), abs=1e-5)


def test_perplexity_with_an_adapter_is_the_finetuned_models(cli, tiny_llama, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    tuned = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    tuned.save_pretrained(tmp_path / "adapter")
    text = "the cat sat on the mat and the dog ran."
    data = _jsonl(tmp_path / "texts.jsonl", [{"id": 1, "text": text}])
    args = ["eval", "perplexity", "--data", data, "-m", tiny_llama, "--dtype", "float32", "--json"]
    plain = json.loads(cli(*args).stdout)
    adapted = cli(*args, "--adapter", tmp_path / "adapter")
    assert adapted.exit_code == 0, adapted.stderr
    ids = torch.tensor([AutoTokenizer.from_pretrained(tiny_llama)(text)["input_ids"]])
    with torch.no_grad():
        expected = tuned(input_ids=ids, labels=ids).loss.item()
    assert json.loads(adapted.stdout)["mean_loss"] == pytest.approx(expected, abs=1e-5)
    assert abs(json.loads(adapted.stdout)["mean_loss"] - plain["mean_loss"]) > 1e-3


# ---------------------------------------------------------------- classify end to end


def test_eval_classify_prints_the_scores_per_label_rows_and_the_confusion_matrix(cli, embedder, gold):
    result = cli("eval", "classify", "--data", gold, "-m", embedder, *EXACT)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split() for line in lines[:3]] == [["records", "6"], ["accuracy", "0.6667"], ["macro-F1", "0.6556"]]
    assert lines[4].split() == ["label", "precision", "recall", "f1", "support"]
    assert lines[5].split() == ["blue", "river", "1.0000", "0.6667", "0.8000", "3"]
    assert lines[7].split() == ["two", "dogs", "0.5000", "1.0000", "0.6667", "1"]
    assert lines[-3:] == ["blue river                     2          1         0",
                          "red house                      0          1         1",
                          "two dogs                       0          0         1"]
    report = json.loads(cli("eval", "classify", "--data", gold, "-m", embedder, *EXACT, "--json").stdout)
    assert report["confusion"] == {"labels": list(LABELS), "matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]]}
    assert report["accuracy"] == pytest.approx(4 / 6) and report["per_label"]["red house"]["f1"] == 0.5


def test_predictions_of_the_classify_command_score_the_same_without_loading_a_model(cli, embedder, gold, tmp_path):
    # The task command's own --output (its input has no label: classify refuses a field it would replace).
    docs = _jsonl(tmp_path / "docs.jsonl", [{"id": f"r{i}", "text": t} for i, (t, _l) in enumerate(ROWS)])
    made = tmp_path / "made.jsonl"
    labels = ",".join(LABELS)
    assert cli("classify", "--input", docs, "--output", made, "--labels", labels, "-m", embedder, *EXACT).exit_code == 0
    ran = json.loads(cli("eval", "classify", "--data", gold, "-m", embedder, *EXACT, "--json").stdout)
    scored = _scored_without_a_model("classify", "--data", gold, "--predictions", made)
    assert scored.pop("predictions") == str(made) and ran.pop("model") == embedder
    assert scored == ran


def _scored_without_a_model(task: str, *args) -> dict:
    """`gptcli eval TASK ... --json` in a fresh process that must import neither torch nor transformers."""
    argv = ["eval", task, *map(str, args), "--json"]
    code = ("import json, sys; from gptcli.__main__ import main; "
            f"code = main({argv!r}); "
            "print(json.dumps({'code': code, 'heavy': [m for m in ('torch', 'transformers') if m in sys.modules]}))")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    report, status = (json.loads(line) for line in child.stdout.splitlines())
    assert status == {"code": 0, "heavy": []}, child.stderr
    return report


@pytest.mark.parametrize("rows,message", [
    ([{"id": "r0", "label": "red house"}], "made.jsonl:6: id 'r0' repeats"),
    ([{"id": "x9", "label": "red house"}], "made.jsonl:6: id 'x9' is not in --data"),
    ([], "no prediction for id 'r5'"),
    ([{"id": "r5", "label": 3}], "made.jsonl:6: field 'label' must be a string"),
])
def test_predictions_with_missing_extra_or_bad_records_exit_2(cli, gold, tmp_path, rows, message):
    made = _jsonl(tmp_path / "made.jsonl",
                  [{"id": f"r{i}", "label": "red house"} for i in range(5)] + rows)
    result = cli("eval", "classify", "--data", gold, "--predictions", made)
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_output_keeps_each_prediction_and_resumes(cli, embedder, gold, tmp_path):
    out = tmp_path / "out.jsonl"
    first = _jsonl(tmp_path / "first.jsonl", [json.loads(line) for line in gold.read_text().splitlines()[:2]])
    args = ["eval", "classify", "-m", embedder, *EXACT, "--labels", ",".join(LABELS), "--output", out]
    assert cli(*args, "--data", first).exit_code == 0  # an earlier run that stopped after two records
    kept = out.read_text()
    result = cli(*args, "--data", gold, "--json")
    assert result.exit_code == 0, result.stderr
    assert "resuming: 2 results" in result.stderr
    assert out.read_text().startswith(kept)  # kept, not redone
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["expected"], r["label"]) for r in records] == [
        (f"r{i}", label, text) for i, (text, label) in enumerate(ROWS)]
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(4 / 6)  # over all six, the resumed ones too
    again = cli(*args, "--data", gold, "--json")
    assert "nothing to do" in again.stderr and json.loads(again.stdout)["accuracy"] == pytest.approx(4 / 6)
    scored = json.loads(cli("eval", "classify", "--data", gold, "--predictions", out, "--json").stdout)
    assert scored["accuracy"] == pytest.approx(4 / 6)  # eval's own --output is a predictions file too


def test_plot_draws_the_confusion_matrix_and_keeps_an_existing_file(cli, embedder, gold, tmp_path):
    plot = tmp_path / "confusion.png"
    result = cli("eval", "classify", "--data", gold, "-m", embedder, *EXACT, "--plot", plot)
    assert result.exit_code == 0, result.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = cli("eval", "classify", "--data", gold, "-m", embedder, *EXACT, "--plot", plot)
    assert again.exit_code == 2 and "--overwrite" in again.stderr
    assert cli("eval", "classify", "--data", gold, "-m", embedder, *EXACT, "--plot", plot,
               "--overwrite").exit_code == 0


def test_a_classifier_with_its_own_labels_is_scored_on_them(cli, tiny_bert, tmp_path):
    data = _jsonl(tmp_path / "gold.jsonl", [{"text": "the cat", "label": "positive"},
                                            {"text": "the dog ran", "label": "negative"}])
    result = cli("eval", "classify", "--data", data, "-m", tiny_bert, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["confusion"]["labels"] == ["negative", "positive"] and report["count"] == 2


# ---------------------------------------------------------------- summarize and translate end to end


def test_eval_summarize_scores_what_summarize_writes(cli, bart, tmp_path):
    texts = ["the cat sat on the mat. the dog ran to the house.", "one two three four. the sun and the moon."]
    references = ["the cat sat on the mat.", "the sun and the moon."]
    gold = _jsonl(tmp_path / "gold.jsonl", [{"id": i, "text": t, "summary": s}
                                            for i, (t, s) in enumerate(zip(texts, references))])
    docs = _jsonl(tmp_path / "docs.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    made = tmp_path / "made.jsonl"
    options = ["-m", bart, "--max-new-tokens", "12", "--batch-size", "2"]
    assert cli("summarize", "--input", docs, "--output", made, *options).exit_code == 0
    summaries = [json.loads(line)["summary"] for line in made.read_text().splitlines()]
    result = cli("eval", "summarize", "--data", gold, *options, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert {name: report[name] for name in ("rouge1", "rouge2", "rougeL")} == pytest.approx(
        metrics.rouge(summaries, references))
    scored = _scored_without_a_model("summarize", "--data", gold, "--predictions", made)
    assert scored["rougeL"] == report["rougeL"] and scored["count"] == 2
    table = cli("eval", "summarize", "--data", gold, "--predictions", made).stdout.splitlines()
    assert table[3].split() == ["ROUGE-L", f"{report['rougeL']:.4f}"]


def test_eval_translate_scores_what_translate_writes(cli, marian, tmp_path):
    import sacrebleu

    texts = ["the cat sat on the mat.", "the dog ran to the house.", "hello world."]
    references = ["die katze sass auf der matte.", "der hund lief zum haus.", "hallo welt."]
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(texts) + "\n")
    made = tmp_path / "made.jsonl"
    options = ["-m", marian, "--to", "de", "--max-new-tokens", "10"]
    assert cli("translate", "--input", lines, "--output", made, *options).exit_code == 0
    translations = [json.loads(line)["translation"] for line in made.read_text().splitlines()]
    # translate's ids for a .txt file are its line numbers
    gold = _jsonl(tmp_path / "gold.jsonl", [{"id": i + 1, "text": t, "translation": r}
                                            for i, (t, r) in enumerate(zip(texts, references))])
    result = cli("eval", "translate", "--data", gold, *options, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["chrf"] == pytest.approx(sacrebleu.corpus_chrf(translations, [references]).score)
    assert report["bleu"] == pytest.approx(sacrebleu.corpus_bleu(translations, [references]).score)
    assert report["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    assert _scored_without_a_model("translate", "--data", gold, "--to", "de", "--predictions", made)["chrf"] \
        == report["chrf"]


# ---------------------------------------------------------------- bad input: exit 2, before any model loads


@pytest.mark.parametrize("task,rows,extra,message", [
    ("classify", [{"text": "a", "label": "x"}, {"text": "b"}], [], "gold.jsonl:2: missing field 'label'"),
    ("classify", [{"text": "a", "label": "x"}, {"text": "b", "label": 1}], [],
     "gold.jsonl:2: field 'label' must be a string"),
    ("classify", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}], [], "holds one label ('x')"),
    ("classify", [{"text": "a", "label": "x"}, {"text": "b", "label": "z"}], ["--labels", "x,y"],
     "gold.jsonl:2: label 'z' is not one of the labels given"),
    ("classify", [{"text": "a", "label": "x", "scores": 1}], ["--labels", "x,y"], "gold.jsonl:1: field 'scores'"),
    ("classify", [{"text": "a", "label": "x", "expected": "y"}], ["--labels", "x,y"],
     "gold.jsonl:1: field 'expected'"),
    ("classify", [{"text": "a", "label": "x"}], ["--labels", "x,y", "--plot", "c.jpeg"], "--plot c.jpeg"),
    ("classify", [{"text": "a", "label": "x"}], ["--labels", "x,y", "--predictions", "p.jsonl"],
     "drop --model"),
    ("summarize", [{"text": "a", "summary": ""}], [], "gold.jsonl:1: field 'summary' is empty"),
    ("summarize", [{"text": "a"}], [], "gold.jsonl:1: missing field 'summary'"),
    ("translate", [{"text": "a", "translation": "b"}], [], "give the target language: --to"),
    ("translate", [{"text": "", "translation": "b"}], ["--to", "de"], "gold.jsonl:1: field 'text' is empty"),
    ("perplexity", [{"txt": "a"}], [], "gold.jsonl:1: missing field 'text'"),
])
def test_bad_data_or_options_exit_2_with_one_line_before_loading(cli, tmp_path, task, rows, extra, message):
    data = _jsonl(tmp_path / "gold.jsonl", rows)
    result = cli("eval", task, "--data", data, "-m", "/no/such/model", *extra)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_eval_takes_each_tasks_own_options_with_the_same_help(cli):
    own = cli("classify", "--help").stdout
    shown = cli("eval", "classify", "--help").stdout
    for option in ("--labels-file", "--label-template", "--hypothesis-template", "--prompt", "--model"):
        assert option in shown and option in own
    assert "Embedding models: the description each" in shown
    assert "--overflow" in cli("eval", "summarize", "--help").stdout
    assert "--from" in cli("eval", "translate", "--help").stdout
    assert "--adapter" in cli("eval", "perplexity", "--help").stdout
