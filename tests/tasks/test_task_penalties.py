"""summarize and translate pass presence / frequency penalties to the engine's sampler (default off)."""

from __future__ import annotations

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


def _load(folder, command):
    return load_model(LoadOptions(str(folder)), accept=(CAUSAL_LM,), command=command)


def test_penalties_are_off_by_default():
    for sampling in (summarize._sampling(SummarizeParams()), translate._sampling(TranslateParams("ro"))):
        assert (sampling.presence_penalty, sampling.frequency_penalty) == (0.0, 0.0)


def test_summarize_passes_its_penalties_to_the_runner(long_llama):
    summarizer = Summarizer(_load(long_llama, "summarize"),
                            SummarizeParams(length="short", presence_penalty=0.5, frequency_penalty=0.3))
    sampling = summarizer._runner.sampling
    assert (sampling.presence_penalty, sampling.frequency_penalty) == (0.5, 0.3)
    assert sampling.repetition_penalty == summarize.REPETITION_PENALTY  # nothing else changes


def test_translate_passes_its_penalties_to_the_runner(long_llama, monkeypatch):
    seen = []
    real = translate.Runner

    def spy(*args, **kwargs):
        if "sampling" in kwargs:
            seen.append(kwargs["sampling"])
        return real(*args, **kwargs)

    monkeypatch.setattr(translate, "Runner", spy)
    translator = make_translator(_load(long_llama, "translate"),
                                 TranslateParams("fr", "en", max_new_tokens=2, frequency_penalty=0.6))
    list(translator.translate(["the cat sat."]))
    assert [(s.presence_penalty, s.frequency_penalty) for s in seen] == [(0.0, 0.6)]


def test_out_of_range_penalties_are_refused(long_llama):
    with pytest.raises(UsageError, match="frequency-penalty"):
        SummarizeParams(frequency_penalty=2.5).validate()
    translator = make_translator(_load(long_llama, "translate"), TranslateParams("fr", "en", presence_penalty=-3))
    with pytest.raises(UsageError, match="presence-penalty"):
        list(translator.translate(["the cat sat."]))
