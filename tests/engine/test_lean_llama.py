"""The lean Llama decode step (engine/lean_llama.py) gives transformers' own logits, bit for bit, and steps
aside where it could not."""

from __future__ import annotations

import copy

import pytest
import torch

from gptcli.engine.kvcache import ReservedCache
from gptcli.engine.lean_llama import lean_decoder
from gptcli.engine.scheduler import left_pad, positions_of
from gptcli.models.kinds import CAUSAL_LM
from gptcli.models.loader import LoadOptions, load_model


def _loaded(folder, dtype: str):
    return load_model(LoadOptions(str(folder), "cpu", dtype), accept=(CAUSAL_LM,), command="generate")


def _decode(model, step, prompts, steps: int, pad_id: int):
    """Prefill ``prompts`` (left-padded) with transformers, then ``steps`` greedy decode steps by ``step``;
    every step's logits."""
    ids, attention = left_pad(prompts, pad_id, "cpu")
    cache = ReservedCache(model.config.num_hidden_layers, ids.shape[1] + steps)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=attention, position_ids=positions_of(attention), cache=cache,
                    use_cache=True, logits_to_keep=1)
        positions = positions_of(attention)[:, -1:]
        logits = [out.logits[:, -1]]
        for _ in range(steps):
            token = logits[-1].argmax(-1, keepdim=True)
            attention = torch.cat([attention, attention.new_ones((len(prompts), 1))], dim=1)
            positions = positions + 1
            logits.append(step(token, attention, positions, cache).logits[:, -1])
    return torch.stack(logits)


def _transformers_step(model):
    return lambda ids, attention, positions, cache: model(input_ids=ids, attention_mask=attention,
                                                          position_ids=positions, cache=cache, use_cache=True,
                                                          logits_to_keep=1)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("prompts", [[[5, 17, 42, 8, 99, 3]], [[5, 17, 42, 8, 99, 3], [7, 7], [120, 4, 61]]],
                         ids=["one row", "padded rows"])
def test_the_lean_step_gives_transformers_logits_bit_for_bit(tiny_llama, dtype, prompts):
    lm = _loaded(tiny_llama, dtype)
    lean = lean_decoder(lm.model)
    assert lean is not None
    pad = lm.tokenizer.pad_token_id
    expected = _decode(lm.model, _transformers_step(lm.model), prompts, 12, pad)
    got = _decode(lm.model, lean.step, prompts, 12, pad)
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected)


def test_joined_weights_change_nothing_for_transformers_forward(tiny_llama):
    """The q/k/v and gate/up weights become views of one tensor each: same values, no copy kept."""
    lm = _loaded(tiny_llama, "float32")
    attention = lm.model.model.layers[0].self_attn
    before = [p.detach().clone() for p in (attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight)]
    ids = torch.tensor([[5, 17, 42, 8]])
    with torch.inference_mode():
        reference = lm.model(input_ids=ids).logits
    lean_decoder(lm.model)
    joined = [attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]
    assert all(torch.equal(a, b) for a, b in zip(before, joined))
    assert len({w.untyped_storage().data_ptr() for w in joined}) == 1
    with torch.inference_mode():
        assert torch.equal(lm.model(input_ids=ids).logits, reference)


def test_it_steps_aside_for_a_model_it_does_not_reproduce(tiny_llama, tiny_gpt2):
    from peft import LoraConfig, get_peft_model

    assert lean_decoder(_loaded(tiny_gpt2, "float32").model) is None  # another family
    eager = _loaded(tiny_llama, "float32").model
    eager.config._attn_implementation = "eager"  # eager softmax rounds otherwise
    assert lean_decoder(eager) is None
    wrapped = get_peft_model(_loaded(tiny_llama, "float32").model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert lean_decoder(wrapped.get_base_model()) is None  # LoRA layers in the projections


def test_greedy_generation_is_the_same_with_and_without_it(tiny_llama, cli, tmp_path, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello there\ntell me about cats and dogs\nwhy\n", encoding="utf-8")
    args = ("generate", "--model", tiny_llama, "--input", prompts, "--max-new-tokens", 20, "--json", "--device", "cpu")
    with_lean = cli(*args)
    monkeypatch.setenv("GPTCLI_LEAN_DECODE", "0")
    without = cli(*args)
    assert with_lean.exit_code == 0 and without.exit_code == 0
    assert with_lean.stdout == without.stdout and len(with_lean.stdout.splitlines()) == 3


@pytest.mark.parametrize("rows", [1, 3])
def test_joined_int4_products_equal_each_layers_own(rows):
    from gptcli.engine.lean_llama import _joined
    from gptcli.models import int4
    from tests.test_int4 import _on_grid

    layers = [int4.PackedInt4Linear(*_on_grid(size, 128, seed=n)[:3]) for n, size in enumerate((128, 64, 64))]
    x = torch.randn(rows, 1, 128).bfloat16()
    joined = _joined(layers)(x)
    assert [tuple(out.shape) for out in joined] == [(rows, 1, 128), (rows, 1, 64), (rows, 1, 64)]
    assert all(torch.equal(out, layer(x)) for out, layer in zip(joined, layers))


@pytest.mark.parametrize("prompts", [[[5, 17, 42, 8, 99, 3]], [[5, 17, 42, 8, 99, 3], [7, 7], [120, 4, 61]]],
                         ids=["one row", "padded rows"])
def test_several_new_tokens_at_once_give_transformers_logits(tiny_llama, prompts):
    """A token and its guessed continuation (engine/speculative.py) in one lean pass: each position's logits
    are transformers' for the same pass (float32; several queries take other kernels, so not bit for bit)."""
    lm = _loaded(tiny_llama, "float32")
    lean = lean_decoder(lm.model)
    new = torch.tensor([[11, 12, 13, 14]] * len(prompts))
    results = []
    for step in (lean.step, lambda *args: lm.model(input_ids=args[0], attention_mask=args[1], position_ids=args[2],
                                                   cache=args[3], use_cache=True)):
        ids, attention = left_pad(prompts, lm.tokenizer.pad_token_id, "cpu")
        cache = ReservedCache(lm.model.config.num_hidden_layers, ids.shape[1] + 4)
        with torch.inference_mode():
            lm.model(input_ids=ids, attention_mask=attention, position_ids=positions_of(attention), cache=cache,
                     use_cache=True)
            positions = positions_of(attention)[:, -1:] + torch.arange(1, 5)
            attention = torch.cat([attention, attention.new_ones((len(prompts), 4))], dim=1)
            results.append(step(new, attention, positions, cache).logits[:, -4:])
    assert torch.allclose(results[0], results[1], atol=1e-5)
    assert not torch.allclose(results[0][:, 0], results[0][:, 1], atol=1e-3)  # each position its own logits
