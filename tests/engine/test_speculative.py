"""Speculative decoding by prompt lookup on the tiny Llama (float32): a lone row that guesses gives
exactly what plain steps give (text, token counts, finish reasons, log-probabilities), for greedy and
seeded sampling, penalties, stop strings and constraints, and it did guess (and keep some guesses)."""

from __future__ import annotations

import pytest

from gptcli.engine import scheduler as sched
from gptcli.engine import speculative
from gptcli.engine.api import Finished, GenerationStats, Request
from gptcli.engine.constraints import Constraint
from gptcli.engine.sampling import SamplingParams
from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM

PROMPTS = ["the cat sat on the mat and the cat sat on the mat and the cat", "hello world hello world hello",
           "write a poem about the sea", "one two three four one two three four one two"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from tests import tiny_models

    folder = tiny_models.build_llama(tmp_path_factory.mktemp("speculative") / "tiny-llama")
    return load_model(LoadOptions(str(folder), dtype="float32"), accept=(CAUSAL_LM,), command="generate")


def _alone(lm, requests, guess: bool, monkeypatch) -> tuple[dict, GenerationStats]:
    monkeypatch.setenv(speculative.DISABLE, "1" if guess else "0")
    stats = GenerationStats()
    finished = {}
    for request in requests:
        scheduler = sched.Scheduler(lm, 1, stats=stats)
        scheduler.submit(request)
        steps = 0
        while scheduler.has_work():
            finished.update({e.request_id: e for e in scheduler.step() if isinstance(e, Finished)})
            steps += 1
            assert steps < 200
    return finished, stats


def _requests(lm, sampling=SamplingParams(), new_tokens: int = 40, **options) -> list[Request]:
    return [Request(i, tuple(lm.tokenizer(p)["input_ids"]), new_tokens, sampling, key=str(i), **options)
            for i, p in enumerate(PROMPTS)]


def _same(lm, requests, monkeypatch) -> GenerationStats:
    plain, _ = _alone(lm, requests, False, monkeypatch)
    guessed, stats = _alone(lm, requests, True, monkeypatch)
    for request in requests:
        mine, theirs = guessed[request.id], plain[request.id]
        assert (mine.text, mine.generated_tokens, mine.finish_reason) == \
            (theirs.text, theirs.generated_tokens, theirs.finish_reason), request.id
        if theirs.logprobs is not None:
            assert [(e.token_id, [t for t, _ in e.top]) for e in mine.logprobs] == \
                [(e.token_id, [t for t, _ in e.top]) for e in theirs.logprobs]
            assert [e.logprob for e in mine.logprobs] == pytest.approx([e.logprob for e in theirs.logprobs],
                                                                     abs=1e-4)
    return stats


def test_greedy_guesses_give_what_plain_steps_give_and_some_are_kept(lm, monkeypatch):
    stats = _same(lm, _requests(lm, logprobs=2), monkeypatch)
    assert stats.drafted_tokens > 0 and 0 < stats.accepted_tokens <= stats.drafted_tokens


def test_models_without_the_lean_step_check_guesses_through_transformers_forward(lm, tiny_gpt2, monkeypatch):
    from gptcli.engine.lean_llama import DISABLE as LEAN

    monkeypatch.setenv(LEAN, "0")
    assert _same(lm, _requests(lm), monkeypatch).accepted_tokens > 0
    monkeypatch.delenv(LEAN)
    gpt2 = load_model(LoadOptions(str(tiny_gpt2), dtype="float32"), accept=(CAUSAL_LM,), command="generate")
    # Absolute position embeddings: a guess fed at the wrong positions would change the picks.
    assert _same(gpt2, _requests(gpt2, new_tokens=80), monkeypatch).drafted_tokens > 0


def test_seeded_sampling_and_penalties_pick_the_same_tokens(lm, monkeypatch):
    _same(lm, _requests(lm, SamplingParams(temperature=0.8, top_k=30, seed=3)), monkeypatch)
    _same(lm, _requests(lm, SamplingParams(repetition_penalty=1.3, no_repeat_ngram_size=4)), monkeypatch)
    _same(lm, _requests(lm, SamplingParams(presence_penalty=0.5, frequency_penalty=0.4)), monkeypatch)


def test_stop_strings_token_limits_and_constraints_end_where_plain_steps_end(lm, monkeypatch):
    plain, _ = _alone(lm, _requests(lm), False, monkeypatch)
    stops = [Request(i, r.ids, r.max_new_tokens, stop=(_late_substring(plain[i].text),), key=str(i))
             for i, r in enumerate(_requests(lm)) if _late_substring(plain[i].text)]
    assert stops and _same(lm, stops, monkeypatch).drafted_tokens > 0
    _same(lm, _requests(lm, new_tokens=7), monkeypatch)
    choice = Constraint("choice", '["the cat sat on the mat", "hello world"]')
    _same(lm, _requests(lm, constraint=choice), monkeypatch)


def _late_substring(text: str) -> str | None:
    """Two characters first seen past the 20th: a stop string that ends a row after it has guessed."""
    return next((text[j:j + 2] for j in range(20, len(text) - 2) if text.find(text[j:j + 2]) == j), None)


def test_generate_gives_the_same_text_and_stats_say_what_the_guesses_kept(cli, tiny_llama, monkeypatch):
    args = ("generate", PROMPTS[3], "-m", tiny_llama, "--dtype", "float32", "--max-new-tokens", "40", "--stats")
    monkeypatch.setenv(speculative.DISABLE, "0")
    plain = cli(*args)
    monkeypatch.setenv(speculative.DISABLE, "1")
    guessed = cli(*args)
    assert plain.exit_code == guessed.exit_code == 0, guessed.stderr
    assert guessed.stdout == plain.stdout
    assert "prompt lookup kept" in guessed.stderr and "prompt lookup" not in plain.stderr
