"""The classify service on tiny real models of every kind, loaded through the real loader."""

from __future__ import annotations

import math
import random

import pytest

from gptcli.errors import InputError, UsageError
from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM, EMBEDDING, SEQUENCE_CLASSIFIER
from gptcli.services.classify import ClassifyParams, check_labels, classify
from gptcli.services.classify_lm import LabelScorer
from tests import tiny_models
from tests.tasks import tiny_classifiers as tc

ALL_KINDS = (CAUSAL_LM, SEQUENCE_CLASSIFIER, EMBEDDING)
TEXTS = ["the cat sat on a mat", "big red house by the river", "sun", "two dogs ran to the city at night",
         "what is the capital of france and why is it paris"]


def _load(folder):
    return load_model(LoadOptions(str(folder), dtype="float32"), accept=ALL_KINDS, command="classify")


@pytest.fixture(scope="module")
def trained(session_dir):
    return _load(tc.built_once(session_dir / "trained-llama", tc.build_trained_llama))


@pytest.fixture(scope="module")
def nli(session_dir):
    return _load(tc.built_once(session_dir / "tiny-nli", tc.build_nli))


@pytest.fixture(scope="module")
def embedder(session_dir):
    return _load(tc.built_once(session_dir / "tiny-embedding", tc.build_embedding))


def _texts(word, n=8, seed=11):
    rng = random.Random(seed)
    return [tc.keyword_text(rng, word) for _ in range(n)]


def _labels_of(lm, texts, **params):
    params = {"labels": ("day", "night"), "prompt": tc.TINY_PROMPT, **params}
    return [r.label for r in classify(lm, texts, ClassifyParams(**params))]


# ---------------------------------------------------------------- causal LM: label scoring


def test_trained_lm_gives_the_labels_it_was_trained_to_prefer(trained):
    assert _labels_of(trained, _texts("moon")) == ["night"] * 8
    assert _labels_of(trained, _texts("moon"), calibrate=False) == ["night"] * 8
    assert _labels_of(trained, _texts("sun"), calibrate=False) == ["day"] * 8


def test_calibration_changes_the_decision_on_a_constructed_case(trained):
    # "river" texts were answered day 75% / night 25%; content-free inputs always day.
    # Raw likelihood says day; against the content-free prior, night gained far more.
    river = _texts("river")
    assert _labels_of(trained, river, calibrate=False) == ["day"] * 8
    assert _labels_of(trained, river, calibrate=True) == ["night"] * 8


def _reference_mean_logprob(lm, prompt_ids, answer_ids):
    """Plain full forward pass on one unpadded sequence, no cache: the definition of the score."""
    import torch

    ids = torch.tensor([prompt_ids + answer_ids], device=lm.model.device)
    with torch.inference_mode():
        logprobs = lm.model(input_ids=ids).logits[0].float().log_softmax(-1)
    picked = [logprobs[len(prompt_ids) - 1 + k, token].item() for k, token in enumerate(answer_ids)]
    return sum(picked) / len(picked)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_gpt2"])  # chat template, and none (raw "Label:")
def test_batched_cached_scores_equal_one_plain_forward_each(request, fixture):
    lm = _load(request.getfixturevalue(fixture))
    labels = ("cat", "river city", "a")  # labels of different token lengths: padded rows
    # A short instruction: the tiny models' context is 128 tokens and their BPE spells words letter by letter.
    prompt = "Pick one of {labels}.\n{text}"
    params = ClassifyParams(labels=labels, calibrate=False, batch_size=5, prompt=prompt)
    scorer = LabelScorer(lm, labels, params)
    evidence, _tokens = scorer.evidence(TEXTS)
    for text, row in zip(TEXTS, evidence):
        ids_in = scorer.prompt_ids(text, text)
        expected = [_reference_mean_logprob(lm, ids_in, ids) for ids in scorer.label_ids]
        assert row == pytest.approx(expected, abs=1e-4)
    one_by_one = [r.scores for r in classify(lm, TEXTS, ClassifyParams(labels=labels, batch_size=1, prompt=prompt))]
    together = [r.scores for r in classify(lm, TEXTS, ClassifyParams(labels=labels, batch_size=16, prompt=prompt))]
    for alone, batched in zip(one_by_one, together):
        assert list(batched.values()) == pytest.approx(list(alone.values()), abs=1e-4)


def test_calibration_subtracts_the_mean_score_of_the_neutral_texts_that_fit(tiny_llama):
    from gptcli.services.neutral_texts import NEUTRAL_TEXTS

    lm = _load(tiny_llama)
    labels = ("cat", "dog")
    raw = LabelScorer(lm, labels, ClassifyParams(labels=labels, calibrate=False))
    calibrated = LabelScorer(lm, labels, ClassifyParams(labels=labels))
    room = lm.context_length - max(len(ids) for ids in raw.label_ids)
    fitting = [text for text in NEUTRAL_TEXTS if len(raw.prompt_ids(text, "", check=False)) <= room]
    assert fitting  # the tiny model's context holds some of them, and may not hold all
    free, _ = raw.label_evidence(fitting)
    bias = [sum(column) / len(fitting) for column in zip(*free)]
    assert calibrated.bias == pytest.approx(bias, abs=1e-5)
    (plain,), _ = raw.label_evidence(["the cat"])
    (shifted,), _ = calibrated.label_evidence(["the cat"])
    assert shifted == pytest.approx([p - b for p, b in zip(plain, bias)], abs=1e-5)


def _reference_text_logprob(lm, prompt_ids, text_ids):
    """The text's summed log-probability after the prompt, one plain forward pass: the channel's definition."""
    return _reference_mean_logprob(lm, prompt_ids, text_ids) * len(text_ids)


def test_the_channel_scores_each_text_after_each_labels_prompt_batched_or_not(tiny_llama):
    from gptcli.services.classify_lm import CHANNEL_PROMPT, ChannelScorer

    lm = _load(tiny_llama)
    labels = ("cat", "river city", "a")
    together, alone = ChannelScorer(lm, labels, batch_size=7), ChannelScorer(lm, labels, batch_size=1)
    for text, row, single in zip(TEXTS, together.scores(TEXTS), alone.scores(TEXTS)):
        text_ids = lm.tokenizer(" " + text, add_special_tokens=False)["input_ids"]
        expected = [_reference_text_logprob(lm, lm.tokenizer(CHANNEL_PROMPT.format(label=label))["input_ids"], text_ids)
                    for label in labels]
        assert row == pytest.approx(expected, abs=1e-3) and single == pytest.approx(expected, abs=1e-3)


def test_one_label_zero_shot_mixes_in_the_channel_and_a_prompt_examples_or_multi_label_do_not(tiny_llama, session_dir):
    from gptcli.services.classify_lm import CHANNEL_WEIGHT

    lm = _load(tiny_llama)
    labels = ("cat", "dog")
    texts = TEXTS[:4]  # the default prompt and the longest one do not fit the tiny model's 128 tokens
    scorer = LabelScorer(lm, labels, ClassifyParams(labels=labels))
    mixed, _ = scorer.evidence(texts)
    labelled, _ = scorer.label_evidence(texts)
    for row, label_row, channel_row in zip(mixed, labelled, scorer.channel.scores(texts)):
        expected = [(1 - CHANNEL_WEIGHT) * (a - math.log(sum(math.exp(x) for x in label_row)))
                    + CHANNEL_WEIGHT * (b - math.log(sum(math.exp(x) for x in channel_row)))
                    for a, b in zip(label_row, channel_row)]
        assert row == pytest.approx(expected, abs=1e-6)
    assert mixed != labelled
    own_prompt = LabelScorer(lm, labels, ClassifyParams(labels=labels, prompt="Pick one of {labels}.\n{text}"))
    examples = (("a cat", "cat"), ("a dog", "dog"))
    roomy = _load(tiny_models.build_llama(session_dir / "tiny-llama-1k", context=1024))  # the examples need room
    with_examples = LabelScorer(roomy, labels, ClassifyParams(labels=labels, examples=examples))
    multi = LabelScorer(lm, labels, ClassifyParams(labels=labels, multi_label=True))  # each label on its own
    assert own_prompt.channel is None and with_examples.channel is None and multi.channel is None
    assert own_prompt.evidence(texts) == own_prompt.label_evidence(texts)


def test_results_come_in_input_order_with_scores_summing_to_one(trained):
    texts = _texts("moon", 3) + _texts("sun", 3) + _texts("moon", 3, seed=5)
    results = list(classify(trained, texts, ClassifyParams(labels=("day", "night"), prompt=tc.TINY_PROMPT,
                                                           calibrate=False, batch_size=4)))
    assert [r.index for r in results] == list(range(9))
    assert [r.label for r in results] == ["night"] * 3 + ["day"] * 3 + ["night"] * 3
    assert all(sum(r.scores.values()) == pytest.approx(1.0) for r in results)


def test_text_longer_than_the_context_is_an_error_with_numbers(tiny_llama):
    lm = _load(tiny_llama)
    with pytest.raises(InputError, match=r"more than the model's context of 128"):
        list(classify(lm, ["cat " * 200], ClassifyParams(labels=("a", "b"))))


# ---------------------------------------------------------------- sequence classifiers


def _logits(lm, texts, pairs=None):
    import torch

    batch = lm.tokenizer(texts, pairs, padding=True, return_tensors="pt").to(lm.model.device)
    with torch.inference_mode():
        return lm.model(**batch).logits.float().cpu()


def test_classifier_uses_its_own_labels_with_softmax(tiny_bert):
    lm = _load(tiny_bert)
    results = list(classify(lm, TEXTS, ClassifyParams()))
    expected = _logits(lm, TEXTS).softmax(-1)
    for result, row in zip(results, expected.tolist()):
        assert list(result.scores) == ["negative", "positive"]
        assert list(result.scores.values()) == pytest.approx(row, abs=1e-5)
        assert result.label == ["negative", "positive"][row.index(max(row))]


def test_classifier_multi_label_uses_sigmoid_and_threshold(tiny_bert):
    lm = _load(tiny_bert)
    expected = _logits(lm, TEXTS).sigmoid().tolist()
    for threshold in (0.3, 0.5, 0.7):
        results = list(classify(lm, TEXTS, ClassifyParams(multi_label=True, threshold=threshold)))
        for result, row in zip(results, expected):
            assert list(result.scores.values()) == pytest.approx(row, abs=1e-5)
            assert set(result.labels) == {n for n, p in zip(("negative", "positive"), row) if p >= threshold}


def test_classifier_configured_multi_label_is_multi_label_by_itself(session_dir):
    lm = _load(tc.built_once(session_dir / "multi-bert", tc.build_multi_label_bert))
    (result,) = classify(lm, ["the sun and the dog"], ClassifyParams())
    assert result.multi_label and "labels" in result.to_dict()
    assert list(result.scores.values()) == pytest.approx(_logits(lm, ["the sun and the dog"]).sigmoid()[0].tolist(),
                                                         abs=1e-5)


def test_labels_given_to_a_plain_classifier_is_an_error(tiny_bert):
    with pytest.raises(UsageError, match="its own labels.*drop --labels"):
        list(classify(_load(tiny_bert), ["cat"], ClassifyParams(labels=("a", "b"))))


def test_nli_model_scores_entailment_against_contradiction(nli):
    labels = ("sea", "city", "tree")
    results = list(classify(nli, TEXTS, ClassifyParams(labels=labels, hypothesis_template="it is about {}.")))
    for text, result in zip(TEXTS, results):
        logits = _logits(nli, [text] * 3, [f"it is about {label}." for label in labels])
        evidence = (logits[:, 0] - logits[:, 2]).tolist()  # entailment - contradiction
        assert list(result.scores.values()) == pytest.approx(_softmax(evidence), abs=1e-5)
    multi = list(classify(nli, TEXTS[:2], ClassifyParams(labels=labels, multi_label=True,
                                                         hypothesis_template="it is about {}.")))
    logits = _logits(nli, [TEXTS[0]] * 3, [f"it is about {label}." for label in labels])
    entail_vs_contradict = logits[:, [2, 0]].softmax(-1)[:, 1].tolist()
    assert list(multi[0].scores.values()) == pytest.approx(entail_vs_contradict, abs=1e-5)


def test_nli_hypothesis_template_matters_and_labels_are_required(nli):
    labels = ("sea", "city")
    first = next(classify(nli, ["the sun"], ClassifyParams(labels=labels)))
    other = next(classify(nli, ["the sun"], ClassifyParams(labels=labels, hypothesis_template="{} is here.")))
    assert first.scores != other.scores
    with pytest.raises(UsageError, match="--labels"):
        list(classify(nli, ["the sun"], ClassifyParams()))


def _softmax(values):
    exps = [math.exp(v - max(values)) for v in values]
    return [e / sum(exps) for e in exps]


# ---------------------------------------------------------------- embedding models


def test_embedding_picks_the_label_whose_description_matches(embedder):
    labels = ("red house", "blue river", "two dogs")
    params = ClassifyParams(labels=labels, label_template="{}", calibrate=False)
    results = list(classify(embedder, ["blue river", "two dogs", "red house"], params))
    assert [r.label for r in results] == ["blue river", "two dogs", "red house"]


def test_embedding_mean_pooling_ignores_padding(embedder):
    labels = ("red house", "blue river")
    texts = ["sun", "the big red house by the river on a long day", "moon"]
    params = dict(labels=labels, label_template="{}")
    alone = [next(classify(embedder, [t], ClassifyParams(**params, batch_size=1))).scores for t in texts]
    batched = [r.scores for r in classify(embedder, texts, ClassifyParams(**params, batch_size=3))]
    for a, b in zip(alone, batched):
        assert list(b.values()) == pytest.approx(list(a.values()), abs=1e-5)


# ---------------------------------------------------------------- checks


@pytest.mark.parametrize("labels,message", [([], "is empty"), (["a", " "], "blank label"),
                                            (["Yes", "no", "yes"], "repeats the label 'yes'")])
def test_bad_labels_are_refused(labels, message):
    with pytest.raises(UsageError, match=message):
        check_labels(labels)


def test_labels_are_stripped():
    assert check_labels([" positive", "negative "]) == ("positive", "negative")
