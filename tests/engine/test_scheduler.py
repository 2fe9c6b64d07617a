"""The scheduler on a tiny real model: requests join and leave a running batch, and each
result is what the request gives alone (float32, where reduction order cannot move a token)."""

from __future__ import annotations

import pytest

from gptcli.engine import picking
from gptcli.engine import scheduler as sched
from gptcli.engine.api import Delta, Finished, Request
from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM
from gptcli.engine.sampling import SamplingParams

PROMPTS = ["a", "the cat sat on the mat", "hello world", "two small red houses by the river at night",
           "write a poem about the sea", "what is the capital of france and why is it paris? answer in one line",
           "rain"]
MAX_NEW = [14, 3, 20, 6, 11, 2, 17]  # rows end at very different steps, so rows free up mid-batch


@pytest.fixture(scope="module")
def lm(tiny_llama_module):
    return load_model(LoadOptions(str(tiny_llama_module), dtype="float32"), accept=(CAUSAL_LM,), command="generate")


@pytest.fixture(scope="module")
def tiny_llama_module(tmp_path_factory):
    from tests import tiny_models

    return tiny_models.build_llama(tmp_path_factory.mktemp("engine") / "tiny-llama")


def _requests(lm, sampling=SamplingParams(), **kw) -> list[Request]:
    ids = [lm.tokenizer(p)["input_ids"] for p in PROMPTS]
    return [Request(i, tuple(x), n, sampling, key=str(i), **kw) for i, (x, n) in enumerate(zip(ids, MAX_NEW))]


def _run(lm, requests, batch_size, cancel_after=None):
    scheduler = sched.Scheduler(lm, batch_size)
    for request in requests:
        scheduler.submit(request)
    finished, deltas, steps = {}, {}, 0
    while scheduler.has_work():
        for event in scheduler.step():
            if isinstance(event, Finished):
                finished[event.request_id] = event
            elif isinstance(event, Delta):
                deltas[event.request_id] = deltas.get(event.request_id, "") + event.text
        steps += 1
        if cancel_after and steps == cancel_after[0]:
            scheduler.cancel(cancel_after[1])
        assert steps < 500  # bounded: every request has a token limit
    return finished, deltas, scheduler


def _alone(lm, requests):
    return {r.id: _run(lm, [r], 1)[0][r.id] for r in requests}


def test_requests_joining_a_running_batch_give_what_they_give_alone(lm, monkeypatch):
    joins, compactions = [], []
    place, compact = sched.Scheduler._place, sched.Scheduler._compact

    def recording_place(self, prefilled, alive, *args):
        joins.append(self.running)  # rows already running when these join
        return place(self, prefilled, alive, *args)

    def recording_compact(self, *args):
        compactions.append(self.running)
        return compact(self, *args)

    monkeypatch.setattr(sched.Scheduler, "_place", recording_place)
    monkeypatch.setattr(sched.Scheduler, "_compact", recording_compact)
    monkeypatch.setattr(sched, "MIN_HEADROOM", 1)  # columns run out often: rows get packed mid-run
    requests = _requests(lm)
    alone = _alone(lm, requests)
    joins.clear(), compactions.clear()
    together, _, _ = _run(lm, requests, batch_size=3)
    assert any(running > 0 for running in joins)  # some requests joined rows that were mid-generation
    assert any(running > 0 for running in compactions)  # and the cache was packed while rows were running
    for request in requests:
        mine, theirs = together[request.id], alone[request.id]
        assert (mine.text, mine.generated_tokens, mine.finish_reason) == \
            (theirs.text, theirs.generated_tokens, theirs.finish_reason)


def test_each_request_keeps_its_own_sampling_in_a_shared_batch(lm):
    greedy = _requests(lm)[:4]
    sampled = [Request(f"s{r.id}", r.ids, r.max_new_tokens, SamplingParams(temperature=1.0, top_k=20, seed=5),
                       key=f"s{r.id}") for r in _requests(lm)[:4]]
    mixed = [r for pair in zip(greedy, sampled) for r in pair]
    together, _, _ = _run(lm, mixed, batch_size=4)
    alone = _alone(lm, mixed)
    assert {k: v.text for k, v in together.items()} == {k: v.text for k, v in alone.items()}
    assert any(together[f"s{i}"].text != together[i].text for i in range(4))  # the sampled rows did sample


def test_a_cancelled_request_ends_at_once_and_frees_its_row(lm):
    requests = _requests(lm)
    alone = _alone(lm, requests)
    finished, _, scheduler = _run(lm, requests, batch_size=3, cancel_after=(2, 0))
    assert finished[0].finish_reason == "cancelled"
    assert finished[0].generated_tokens < MAX_NEW[0]
    assert {k: v.text for k, v in finished.items() if k != 0} == {k: v.text for k, v in alone.items() if k != 0}
    assert scheduler.running == 0 and scheduler.cache is None  # nothing left holding memory


def test_streamed_deltas_add_up_to_the_result(lm):
    finished, deltas, _ = _run(lm, _requests(lm, stream=True), batch_size=4)
    assert all(deltas.get(i, "") == finished[i].text for i in finished)
    assert any(finished[i].text for i in finished)


def test_logprobs_are_the_models_own_for_each_picked_token(lm):
    import torch

    request = _requests(lm, logprobs=3)[2]
    result = _run(lm, [request], 1)[0][request.id]
    assert len(result.logprobs) == result.generated_tokens
    ids = list(request.ids)
    for entry in result.logprobs:
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        expected = torch.log_softmax(logits, dim=-1)
        assert entry.token_id == int(expected.argmax())  # greedy picked the likeliest
        assert entry.logprob == pytest.approx(float(expected[entry.token_id]), abs=1e-4)
        assert [t for t, _ in entry.top] == expected.topk(3).indices.tolist()
        ids.append(entry.token_id)


def test_samplers_of_finished_requests_do_not_pile_up(lm):
    scheduler = sched.Scheduler(lm, batch_size=4)
    ids = tuple(lm.tokenizer("rain")["input_ids"])
    for seed in range(3 * picking.MAX_PICKERS):  # a server: every request its own seed
        scheduler.submit(Request(seed, ids, 1, SamplingParams(temperature=1.0, seed=seed), key="0"))
        while scheduler.has_work():
            scheduler.step()
    assert len(scheduler.picking.pickers) <= picking.MAX_PICKERS + 1
