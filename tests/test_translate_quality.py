"""translate's line endings and language check: a line ends with its translation, a cut one is reported,
and a wrong-language answer is retried or warned; on the default model and tiny real models."""

from __future__ import annotations

import json

import pytest

from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM
from gptcli.services import langcheck, textclean
from gptcli.services.translate import TranslateParams, make_translator
from tests.tasks import tiny_seq2seq


@pytest.mark.parametrize("text,target,source,verdict", [
    ("Cultura franceză continuă să se bucure de un mare prestigiu.", "ro", "en", langcheck.OK),
    ("Aproape toată lumea a venit.", "ro", "en", langcheck.OK),
    ("Tom Hanks, Mary Poppins.", "ro", "en", langcheck.UNKNOWN),  # no function word to go on: not judged
    ("It is still in the testing stage and it is not ready.", "ro", "en", langcheck.WRONG),  # the source copied
    ("La culture française est très appréciée dans le monde.", "ro", "en", langcheck.WRONG),  # French for ro
    ("Доброе утро, как дела?", "ru", "en", langcheck.OK),
    ("Good morning, how are you?", "ru", "en", langcheck.WRONG),
    ("Tom 2019", "de", "en", langcheck.UNKNOWN),
    ("Bonjour tout le monde", "xx", "en", langcheck.UNKNOWN),
])
def test_language_check(text, target, source, verdict):
    assert langcheck.check(text, target, source) == verdict


@pytest.fixture(scope="session")
def long_llama(session_dir):
    return tiny_seq2seq.long_llama(session_dir)


def test_a_line_that_runs_to_its_budget_is_length_and_a_short_line_gets_a_small_budget(long_llama):
    # The tiny random model never writes EOS or a newline: every line runs to its budget, which follows its length.
    lm = load_model(LoadOptions(str(long_llama)), accept=(CAUSAL_LM,), command="translate")
    segments = []
    translator = make_translator(lm, TranslateParams("de", "en", batch_size=2), trace=segments.append)
    results = list(translator.translate(["the cat.", "the sun is red and the cat is very old today."]))
    counts = [len(lm.tokenizer(line)["input_ids"]) for line in ("the cat.", "the sun is red and the cat is very old today.")]
    for result, count in zip(results, counts):
        assert result.finish_reason in ("length", "stop")
        assert result.generated_tokens <= 2 * 2 * count + 2 * 16  # one try, and at most one retry
    assert results[0].generated_tokens < results[1].generated_tokens


def test_default_model_lines_end_with_their_translation(cli, default_model_available, tmp_path):
    lines = ["Almost everyone came.", "I'll come to pick it up later.", "Tom doesn't know where Mary is now."]
    result = cli("translate", "\n".join(lines), "--to", "ro", "--json")
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3
    for record in records:
        text = record["translation"]
        assert "\n" not in text and len(textclean.sentence_spans(text)) <= 1
        assert textclean.cut_repetition(text)[1] is False
        assert not text.lower().startswith(("romanian", "translation", "here"))
        assert record["finish_reason"] in ("eos", "stop", "length")
    cut = sum(r["finish_reason"] == "length" for r in records)
    assert ("stopped at their token limit" in result.stderr) == bool(cut)
