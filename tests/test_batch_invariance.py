"""A record's greedy result does not depend on what else is in its batch (issue 12).

In float32 a prompt decodes to the same tokens, with logits equal to reduction noise, alone and
inside batches of prompts of other lengths (left padding, positions from the mask, rows that end
early, both kinds of KV cache). In bfloat16 batched kernels round differently by batch shape
(benchmarks/results/batch_invariance.txt), so the guarantee there is --batch-size 1: every record
computed alone, whatever else the input holds.
"""

from __future__ import annotations

import json

import pytest

from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM
from gptcli.services import generate as gen
from gptcli.services.prompting import Prompt, encode_prompt, fit_to_context

# From one word to ~40 tokens: batched together, the short ones carry a lot of left padding.
PROMPTS = ["a", "the cat sat on the mat", "hello world",
           "what is the capital of france and why is it paris? please answer the question in one short "
           "answer about the city and the river and the sun",
           "two small red houses by the river at night", "write a poem about the sea"]
FLOAT32_NOISE = 1e-4  # largest logit change reduction order may make (measured: below 1e-5 here)


def _load(folder, dtype="float32"):
    return load_model(LoadOptions(str(folder), dtype=dtype), accept=(CAUSAL_LM,), command="generate")


def _fitted(lm, texts, max_new):
    raw = lm.tokenizer.chat_template is None
    return [fit_to_context(encode_prompt(lm.tokenizer, Prompt(text=t), raw=raw), lm.context_length, new, None, t)
            for t, new in zip(texts, max_new)]


def _decode(lm, fitted, monkeypatch, batch_size):
    """Each prompt's (tokens, logits per step) as the decode loop picked them, keyed by prompt index."""
    from gptcli.engine.picking import Picking

    steps: dict[tuple, list] = {}
    original = Picking._pick

    def recording(self, rows, logits):
        picked = original(self, rows, logits)
        for n, row in enumerate(rows):
            steps.setdefault(tuple(row.request.ids), []).append((picked[n][0], logits[n].float().clone()))
        return picked

    monkeypatch.setattr(Picking, "_pick", recording)
    completions = [e for e in gen.generate(lm, fitted, gen.GenerationParams(batch_size=batch_size))
                   if isinstance(e, gen.Completion)]
    result = {}
    for fit, completion in zip(fitted, completions):
        live = steps[tuple(fit.ids)]
        result[completion.index] = ([token for token, _ in live], [logits for _, logits in live], completion)
    return result


def _assert_same(alone, batched, tolerance):
    tokens, logits, completion = alone
    other_tokens, other_logits, other = batched
    assert other_tokens == tokens
    assert (other.text, other.generated_tokens, other.finish_reason) == \
        (completion.text, completion.generated_tokens, completion.finish_reason)
    worst = max(float((a - b).abs().max()) for a, b in zip(logits, other_logits))
    assert worst <= tolerance, f"logits moved by {worst} in a batch"


# Llama's rotary positions are relative (a shifted row scores the same); GPT-2's learned absolute
# positions show a row whose positions do not start at 0 after its padding.
@pytest.mark.parametrize("model_fixture,cache", [("tiny_llama", "reserved"), ("tiny_llama", "transformers"),
                                                 ("tiny_gpt2", "reserved")])
def test_float32_greedy_is_the_same_alone_and_in_batches_of_other_lengths(request, monkeypatch, model_fixture,
                                                                          cache):
    lm = _load(request.getfixturevalue(model_fixture))
    if cache == "transformers":  # the model's own DynamicCache instead of the reserved buffers
        from gptcli.engine import kvcache
        monkeypatch.setattr(kvcache, "reserved_cache_for", lambda model, capacity: None)
    max_new = [14, 6, 12, 9, 16, 3]  # rows end at different steps; the longest runs on alone
    fitted = _fitted(lm, PROMPTS, max_new)
    assert len({len(f.ids) for f in fitted}) == len(PROMPTS)  # every row padded differently
    alone = {i: _decode(lm, [fit], monkeypatch, 1)[0] for i, fit in enumerate(fitted)}
    # The whole input in one batch, and shuffled into batches of three (other neighbours, other widths).
    together = _decode(lm, fitted, monkeypatch, len(fitted))
    order = [3, 0, 5, 1, 4, 2]
    threes = _decode(lm, [fitted[i] for i in order], monkeypatch, 3)
    for i in range(len(PROMPTS)):
        _assert_same(alone[i], together[i], FLOAT32_NOISE)
        _assert_same(alone[i], threes[order.index(i)], FLOAT32_NOISE)


@pytest.mark.parametrize("model_fixture", ["tiny_llama", "tiny_gpt2"])
def test_a_left_padded_row_scores_as_it_does_alone(request, model_fixture):
    import torch

    from gptcli.engine.scheduler import left_pad, positions_of

    ids, mask = left_pad([[5, 6, 7], [8, 9]], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [0, 8, 9]]
    assert mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    positions = positions_of(mask)  # what the decode loop gives the model
    assert positions.tolist() == [[0, 1, 2], [0, 0, 1]]  # each row counts from 0 after its padding
    lm = _load(request.getfixturevalue(model_fixture))
    with torch.inference_mode():
        batched = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        alone = lm.model(input_ids=torch.tensor([[8, 9]])).logits
    assert float((batched[1, 1:] - alone[0]).abs().max()) <= FLOAT32_NOISE


def test_batch_size_one_makes_bfloat16_results_independent_of_the_other_records(tiny_llama, cli, tmp_path):
    # The switch the README gives for bfloat16: each record alone, so nothing else in the input
    # (neighbours, their lengths, how many there are) reaches its numbers.
    def run(texts):
        source = tmp_path / "prompts.txt"
        source.write_text("\n".join(texts) + "\n", encoding="utf-8")
        result = cli("generate", "-m", str(tiny_llama), "--input", str(source), "--dtype", "bfloat16",
                     "--batch-size", "1", "--max-new-tokens", "12", "--json")
        assert result.exit_code == 0, result.stderr
        return [json.loads(line)["text"] for line in result.stdout.splitlines()]

    together = run(PROMPTS)
    assert len(together) == len(PROMPTS)
    assert run(PROMPTS[::-1]) == together[::-1]
    for text, expected in zip(PROMPTS[:3], together):
        assert run([text]) == [expected]
