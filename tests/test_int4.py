"""--dtype int4: a 4-bit GGUF model's layers kept 4-bit on the CPU (gptcli/models/int4.py)."""

from __future__ import annotations

import json

import pytest
import torch

from gptcli.errors import UsageError
from gptcli.models import LoadOptions, int4, load_model
from gptcli.models.convert import MARKER, converted_folder
from gptcli.models.kinds import CAUSAL_LM
from gptcli.models.placement import choose_placement

PARAGRAPH = ("The lighthouse stood at the end of a long rocky point. Every night its keeper climbed the "
             "spiral stairs, trimmed the wick and watched the beam sweep across the dark water, so that "
             "ships passing the coast would know where the rocks lay and steer clear of them.")


def _on_grid(rows: int, cols: int, seed: int = 0):
    """Weights the way a Q4_1 tensor holds them: per 32 weights, low + code * step, where
    low is the group's least weight and low + 15 * step its greatest (codes 0 and 15 occur)."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (rows, cols), generator=generator, dtype=torch.int32)
    codes[:, 0::32], codes[:, 1::32] = 0, 15
    step = torch.rand(rows, cols // 32, generator=generator) * 0.02 + 0.005
    low = -7.5 * step + torch.randn(rows, cols // 32, generator=generator) * 0.01
    weight = (codes.reshape(rows, -1, 32) * step[..., None] + low[..., None]).reshape(rows, cols)
    return codes, step, low, weight


class _TwoLayers(torch.nn.Module):
    def __init__(self, first, second):
        super().__init__()
        self.first = torch.nn.Linear(first.shape[1], first.shape[0], bias=False)
        self.second = torch.nn.Linear(second.shape[1], second.shape[0], bias=False)
        self.first.weight.data, self.second.weight.data = first, second


def test_only_layers_on_a_4bit_grid_are_stored():
    codes, step, low, on_grid = _on_grid(64, 96)
    stored = int4.find_4bit_layers(_TwoLayers(on_grid, torch.randn(64, 96) * 0.05))
    assert set(stored) == {"first.codes", "first.scale", "first.low"}
    assert torch.equal(int4._from_nibbles(stored["first.codes"]), codes)
    assert torch.allclose(stored["first.scale"], step, rtol=1e-5) and torch.allclose(stored["first.low"], low, atol=1e-6)


def test_packed_layer_computes_what_the_dequantized_weights_do():
    codes, step, low, weight = _on_grid(96, 64, seed=1)
    packed = int4.PackedInt4Linear(codes, step, low)
    x = torch.randn(3, 5, 64).bfloat16()
    exact = x.float() @ weight.T
    plain_bf16 = torch.nn.functional.linear(x, weight.bfloat16()).float()
    out = packed(x)
    assert out.shape == (3, 5, 96) and out.dtype == torch.bfloat16
    # As close to the exact product as an ordinary bf16 layer with the same weights (rounding only).
    assert (out.float() - exact).abs().max() <= 2 * (plain_bf16 - exact).abs().max() + 1e-2


def test_int4_is_cpu_only_and_never_automatic():
    assert not choose_placement("cpu", "auto").int4
    placement = choose_placement("auto", "int4")
    assert placement.int4 and placement.device == "cpu" and placement.label == "int4"
    with pytest.raises(UsageError, match="CPU only"):
        choose_placement("cuda", "int4")


def test_int4_on_a_model_without_4bit_layers_is_a_usage_error(cli, tiny_llama):
    result = cli("generate", "hello", "--model", str(tiny_llama), "--dtype", "int4")
    assert result.exit_code == 2
    assert "needs a 4-bit GGUF model" in result.stderr and "Traceback" not in result.stderr


def test_default_model_keeps_its_4bit_layers_and_predicts_like_bf16(default_model_available):
    packed = load_model(LoadOptions(None, dtype="int4"), accept=(CAUSAL_LM,), command="generate")
    folder = converted_folder(packed.source.gguf)
    layers = [m for m in packed.model.modules() if isinstance(m, int4.PackedInt4Linear)]
    # SmolLM2's GGUF: 7 projections x 30 blocks in Q4_1; the tied embedding is Q8_0 and stays bf16.
    assert len(layers) == 210 == json.loads((folder / MARKER).read_text())["int4_layers"]
    assert not any(isinstance(m, torch.nn.Linear) and m is not packed.model.lm_head for m in packed.model.modules())
    plain = load_model(LoadOptions(None, dtype="bfloat16"), accept=(CAUSAL_LM,), command="generate")
    ids = plain.tokenizer(PARAGRAPH, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        plain_out = plain.model(ids, labels=ids)
        packed_out = packed.model(ids, labels=ids)
    agree = (plain_out.logits.argmax(-1) == packed_out.logits.argmax(-1)).float().mean().item()
    assert agree >= 0.9
    assert abs(packed_out.loss.item() - plain_out.loss.item()) < 0.02 * plain_out.loss.item()


def test_default_model_int4_answers_through_the_cli(cli, default_model_available):
    result = cli("generate", "Name three primary colors.", "--dtype", "int4", "--max-new-tokens", "24",
                 "--stats")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() and "cpu/int4" in result.stderr
