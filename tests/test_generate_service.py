"""The decode loop against transformers' own model.generate, on tiny real models."""

from __future__ import annotations

import pytest

from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM
from gptcli.services import generate as gen
from gptcli.services.prompting import Prompt, encode_prompt, fit_to_context
from gptcli.engine.sampling import SamplingParams

PROMPTS = ["the cat sat on", "hello world", "what is the capital of france and why is it paris?",
           "a", "two small red houses by the river at night"]


def _load(folder, dtype="float32"):
    return load_model(LoadOptions(str(folder), dtype=dtype), accept=(CAUSAL_LM,), command="generate")


def _fitted(lm, texts, max_new=12, raw=False):
    return [fit_to_context(encode_prompt(lm.tokenizer, Prompt(text=t), raw=raw), lm.context_length, max_new, None, t)
            for t in texts]


def _run(lm, fitted, **kw):
    params = gen.GenerationParams(**kw)
    return [e for e in gen.generate(lm, fitted, params) if isinstance(e, gen.Completion)]


def _reference(lm, ids, max_new):
    import torch

    with torch.inference_mode():
        out = lm.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                max_new_tokens=max_new, do_sample=False)
    new = out[0, len(ids):].tolist()
    eos = lm.tokenizer.eos_token_id
    return new[: new.index(eos)] if eos in new else new


@pytest.mark.parametrize("model_fixture,raw", [("tiny_llama", False), ("tiny_llama", True), ("tiny_gpt2", True)])
def test_greedy_tokens_equal_model_generate(request, model_fixture, raw):
    lm = _load(request.getfixturevalue(model_fixture))
    fitted = _fitted(lm, PROMPTS, max_new=16, raw=raw)
    completions = _run(lm, fitted, batch_size=1)
    for fit, completion in zip(fitted, completions):
        expected = _reference(lm, fit.ids, 16)
        assert completion.text == lm.tokenizer.decode(expected, skip_special_tokens=True)
        assert completion.generated_tokens == 16


def test_batched_greedy_equals_one_by_one(tiny_llama):
    lm = _load(tiny_llama)
    fitted = _fitted(lm, PROMPTS, max_new=10)
    alone = [c.text for c in _run(lm, fitted, batch_size=1)]
    batched = _run(lm, fitted, batch_size=4)
    assert [c.index for c in batched] == list(range(len(PROMPTS)))  # input order kept
    assert [c.text for c in batched] == alone


def test_token_budget_bounds_the_running_batch_and_keeps_results(tiny_llama):
    from gptcli.engine.api import Finished, Request
    from gptcli.engine.scheduler import Scheduler

    lm = _load(tiny_llama)
    fitted = _fitted(lm, PROMPTS, max_new=10)
    budget = 3 * max(len(f.ids) + 10 for f in fitted) - 1  # too small for three of the longest rows
    scheduler = Scheduler(lm, batch_size=5, max_batch_tokens=budget)
    for i, f in enumerate(fitted):
        scheduler.submit(Request(i, tuple(f.ids), f.max_new_tokens))
    texts, widest_batch = {}, 0
    while scheduler.has_work():
        for event in scheduler.step():
            if isinstance(event, Finished):
                texts[event.request_id] = event.text
        running = [row.request for row in scheduler.slots if row is not None]
        if len(running) > 1:
            assert len(running) * max(len(r.ids) + r.max_new_tokens for r in running) <= budget
        widest_batch = max(widest_batch, len(running))
    assert widest_batch == 2  # the budget, not the batch size, bounded the batch
    alone = [c.text for c in _run(lm, fitted, batch_size=1)]
    assert [texts[i] for i in range(len(PROMPTS))] == alone


def test_same_seed_same_samples_and_other_seed_differs(tiny_llama):
    lm = _load(tiny_llama)
    fitted = _fitted(lm, PROMPTS[:2], max_new=12)

    def sample(seed):
        return [c.text for c in _run(lm, fitted, sampling=SamplingParams(temperature=1.0, seed=seed), batch_size=2)]

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_num_samples_gives_distinct_samples_per_prompt(tiny_llama):
    lm = _load(tiny_llama)
    fitted = _fitted(lm, PROMPTS[:2], max_new=12)
    completions = _run(lm, fitted, sampling=SamplingParams(temperature=1.0, seed=3), num_samples=3, batch_size=8)
    assert [(c.index, c.sample) for c in completions] == [(i, s) for i in range(2) for s in range(3)]
    assert len({c.text for c in completions if c.index == 0}) > 1


def test_stop_string_ends_output_before_it(tiny_llama):
    lm = _load(tiny_llama)
    fitted = _fitted(lm, PROMPTS[:1], max_new=20)
    free = _run(lm, fitted)[0].text
    stop = free[6:9]  # a piece from the middle of what the model writes unhindered
    stopped = _run(lm, fitted, stop=(stop,))[0]
    assert stopped.finish_reason == gen.FINISH_STOP
    assert stopped.text == free[: free.index(stop)]
    assert stop not in stopped.text


def test_eos_finish_reason(eos_gpt2):
    lm = _load(eos_gpt2)
    completion = _run(lm, _fitted(lm, ["the cat"], max_new=8))[0]
    assert (completion.finish_reason, completion.text, completion.generated_tokens) == ("eos", "", 1)


def test_streamed_chunks_add_up_to_the_text(tiny_llama):
    lm = _load(tiny_llama)
    events = list(gen.generate(lm, _fitted(lm, PROMPTS[:1], max_new=12), gen.GenerationParams(stop=("zz",)),
                               stream=True))
    chunks = [e.text for e in events if isinstance(e, gen.TextChunk)]
    completion = events[-1]
    assert len(chunks) > 1, "tokens must arrive one by one, not all at the end"
    assert "".join(chunks) == completion.text


def test_repetition_penalty_and_ngram_block_change_greedy_output(tiny_llama):
    lm = _load(tiny_llama)
    fitted = _fitted(lm, PROMPTS[:1], max_new=24)
    plain = _run(lm, fitted)[0]
    ids = lm.tokenizer(plain.text, add_special_tokens=False)["input_ids"]
    assert len(set(ids)) < len(ids), "the tiny model repeats itself when unhindered"
    assert _run(lm, fitted, sampling=SamplingParams(no_repeat_ngram_size=1))[0].text != plain.text
    assert _run(lm, fitted, sampling=SamplingParams(repetition_penalty=5.0))[0].text != plain.text


def test_long_prompt_is_an_error_with_both_numbers_unless_truncated(tiny_llama):
    from gptcli.errors import InputError

    lm = _load(tiny_llama)
    ids = encode_prompt(lm.tokenizer, Prompt(text="the cat sat on the mat " * 40))
    with pytest.raises(InputError) as error:
        fit_to_context(ids, lm.context_length, 10, None, "prompt")
    assert str(len(ids)) in str(error.value) and str(lm.context_length) in str(error.value)
    left = fit_to_context(ids, lm.context_length, 10, "left", "prompt")
    right = fit_to_context(ids, lm.context_length, 10, "right", "prompt")
    assert left.ids == ids[-len(left.ids):] and right.ids == ids[: len(right.ids)]
    assert len(left.ids) + left.max_new_tokens <= lm.context_length
    assert left.note and "cut" in left.note


def test_reserved_kv_cache_only_for_full_attention_models(tiny_llama):
    from types import SimpleNamespace

    from transformers import MistralConfig

    from gptcli.engine.kvcache import ReservedCache, reserved_cache_for

    lm = _load(tiny_llama)
    cache = reserved_cache_for(lm.model, 40)
    assert isinstance(cache, ReservedCache) and len(cache.layers) == lm.model.config.num_hidden_layers
    sliding = SimpleNamespace(config=MistralConfig(num_hidden_layers=2, sliding_window=16))
    assert reserved_cache_for(sliding, 40) is None
    # Filled past what was reserved, a layer still grows and keeps every position.
    import torch

    layer = cache.layers[0]
    first, second = torch.randn(2, 1, 30, 8), torch.randn(2, 1, 20, 8)
    layer.update(first, first)
    keys, _values = layer.update(second, second)
    assert keys.shape[-2] == 50 == cache.get_seq_length() and torch.equal(keys, torch.cat([first, second], dim=-2))


def test_presence_and_frequency_penalties_count_generated_tokens_only():
    import torch

    from gptcli.engine.sampling import TokenPicker

    picker = TokenPicker(SamplingParams(presence_penalty=0.5, frequency_penalty=0.25), "cpu")
    logits = torch.zeros((2, 4))
    penalised = picker._penalised(logits, [[1, 1, 2], []])
    # token 1 twice: 0.5 + 2 x 0.25; token 2 once: 0.5 + 0.25; a row with nothing generated is untouched
    assert penalised.tolist() == [[0.0, -1.0, -0.75, 0.0], [0.0, 0.0, 0.0, 0.0]]
    picked = picker(None, torch.tensor([[0.0, 3.0, 0.0, 2.5]]), None, [[1, 1, 1]])
    assert picked.tolist() == [3]  # greedy after the penalty: token 1 fell from 3.0 to 1.75
