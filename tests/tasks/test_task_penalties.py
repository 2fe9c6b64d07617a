"""summarize and translate pass presence / frequency penalties to the engine's sampler: off for summarize,
the measured 0.5 / 1.0 for translate (benchmarks/results/task_penalties.txt), which --presence-penalty and
--frequency-penalty change."""

from __future__ import annotations

import json

import pytest

from gptcli.errors import UsageError
from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM
from gptcli.services import summarize, translate
from gptcli.services.summarize import Summarizer, SummarizeParams
from gptcli.services.translate import TranslateParams, make_translator
from tests.tasks import tiny_seq2seq


@pytest.fixture(scope="session")
def long_llama(session_dir):
    return tiny_seq2seq.long_llama(session_dir)


def _penalties_seen(monkeypatch) -> list:
    """(presence, frequency) of every causal-LM Runner translate makes (seq2seq ones take no sampling)."""
    seen = []
    real = translate.Runner

    def spy(*args, **kwargs):
        if "sampling" in kwargs:
            seen.append((kwargs["sampling"].presence_penalty, kwargs["sampling"].frequency_penalty))
        return real(*args, **kwargs)

    monkeypatch.setattr(translate, "Runner", spy)
    return seen


def _load(folder, command):
    return load_model(LoadOptions(str(folder)), accept=(CAUSAL_LM,), command=command)


def test_summarize_has_no_penalties_and_translate_the_measured_ones_by_default():
    sampling = summarize._sampling(SummarizeParams())
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (0.0, 0.0)
    sampling = translate._sampling(TranslateParams("ro"))
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (0.5, 1.0)
    assert (translate.PRESENCE_PENALTY, translate.FREQUENCY_PENALTY) == (0.5, 1.0)  # the figures --help gives


def test_summarize_passes_its_penalties_to_the_runner(long_llama):
    summarizer = Summarizer(_load(long_llama, "summarize"),
                            SummarizeParams(length="short", presence_penalty=0.5, frequency_penalty=0.3))
    sampling = summarizer._runner.sampling
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (0.5, 0.3)
    assert sampling.repetition_penalty == summarize.REPETITION_PENALTY  # nothing else changes


def test_translate_passes_its_penalties_to_the_runner(long_llama, monkeypatch):
    seen = _penalties_seen(monkeypatch)
    translator = make_translator(_load(long_llama, "translate"),
                                 TranslateParams("fr", "en", max_new_tokens=2, frequency_penalty=0.6))
    list(translator.translate(["the cat sat."]))
    assert seen == [(translate.PRESENCE_PENALTY, 0.6)]


def test_translate_and_eval_take_the_penalties_and_a_resume_keeps_them(cli, long_llama, tmp_path, monkeypatch):
    seen = _penalties_seen(monkeypatch)
    base = ("--to", "fr", "--from", "en", "--model", long_llama, "--max-new-tokens", "2")
    assert cli("translate", "the cat sat.", *base).exit_code == 0
    assert cli("translate", "the cat sat.", *base, "--presence-penalty", "0", "--frequency-penalty", "0.25").exit_code == 0
    data = tmp_path / "ref.jsonl"
    data.write_text(json.dumps({"text": "the cat sat.", "translation": "le chat"}) + "\n")
    assert cli("eval", "translate", "--data", data, *base, "--frequency-penalty", "0").exit_code == 0
    assert seen == [(0.5, 1.0), (0.0, 0.25), (0.5, 0.0)]

    out = tmp_path / "out.jsonl"
    assert cli("translate", "the cat sat.\na dog.", *base, "--output", out).exit_code == 0
    other = cli("translate", "the cat sat.\na dog.", *base, "--output", out, "--frequency-penalty", "0")
    assert other.exit_code == 2 and "--frequency-penalty" in other.stderr  # never mixed into one file


def test_penalties_out_of_range_on_the_command_line_are_usage_errors(cli, long_llama):
    found = cli("translate", "the cat sat.", "--to", "fr", "--model", long_llama, "--presence-penalty", "3")
    assert found.exit_code == 2 and "--presence-penalty" in found.stderr


def test_out_of_range_penalties_are_refused(long_llama):
    with pytest.raises(UsageError, match="frequency-penalty"):
        SummarizeParams(frequency_penalty=2.5).validate()
    translator = make_translator(_load(long_llama, "translate"), TranslateParams("fr", "en", presence_penalty=-3))
    with pytest.raises(UsageError, match="presence-penalty"):
        list(translator.translate(["the cat sat."]))
