"""Keep a 4-bit model's linear weights 4-bit on the CPU: packed int4 matmuls.

Why: decoding one token at a time on a CPU is bound by memory reads, and a
model that arrived as a 4-bit GGUF file (Q4_0, Q4_1, Q4_K: every 32 weights
share one scale and one offset) is de-quantized to bf16 on conversion, so each
token reads four times the bytes the model holds. Repacked for torch's int4
kernel, the same weights decode SmolLM2-135M at about 50 tok/s instead of 27
on 2 cores (benchmarks/README.md). Used when asked (--dtype int4); placement.py
says why it is not chosen automatically.

Nothing is approximated: the GGUF conversion finds the layers whose weights
lie on a 4-bit grid of 32-wide groups (the values of a 4-bit GGUF tensor do)
and stores their codes beside the bf16 weights (``int4.safetensors``); any
other layer (an 8-bit embedding, a Q6_K tensor in a Q4_K_M file) stays bf16.
Loading packs the stored codes (a tenth of a second) instead of searching
the bf16 weights for the grid again (half a second).
"""

from __future__ import annotations

from pathlib import Path

import torch  # imported by the loader and the converter only, after the model stack

GROUP = 32  # weights per scale/offset pair: the block of GGUF's 4-bit formats
LEVELS = 15  # 4 bits: codes 0..15
# A weight on the grid is off by bf16 rounding only (well under a tenth of a step);
# one off the grid is off by up to half a step.
TOLERANCE_STEPS = 0.2
SIDECAR = "int4.safetensors"


def find_4bit_layers(model) -> dict:
    """Tensors to store for every linear layer on a 4-bit grid: name.codes, name.scale, name.low."""
    tensors = {}
    for name, layer in _linear_layers(model):
        grid = _grid_of(layer.weight.detach()) if layer.bias is None else None
        if grid is not None:
            codes, scale, low = grid
            tensors[f"{name}.codes"] = _nibbles(codes)
            tensors[f"{name}.scale"], tensors[f"{name}.low"] = scale.contiguous(), low.contiguous()
    return tensors


def pack_stored_4bit_layers(model, folder: Path) -> int:
    """Swap in packed layers for those stored beside the model; return how many (0 without the file)."""
    from safetensors.torch import load_file

    path = Path(folder) / SIDECAR
    if not path.is_file():
        return 0
    stored = load_file(str(path))
    packed = 0
    for name, layer in list(_linear_layers(model)):  # listed first: the loop swaps modules
        if f"{name}.codes" not in stored:
            continue
        codes = _from_nibbles(stored[f"{name}.codes"])
        if codes.shape != layer.weight.shape:  # a folder edited since conversion: keep its own weights
            continue
        parent, _, attribute = name.rpartition(".")
        replacement = PackedInt4Linear(codes, stored[f"{name}.scale"], stored[f"{name}.low"])
        setattr(model.get_submodule(parent), attribute, replacement)
        packed += 1
    return packed


def _linear_layers(model):
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        # The output projection is tied to the embedding and stored at 8 bits in GGUF files.
        if type(module) is torch.nn.Linear and module is not output and module.in_features % GROUP == 0:
            yield name, module


class PackedInt4Linear(torch.nn.Module):
    """A bias-free linear layer on bf16 activations whose weight is held as packed 4-bit codes."""

    def __init__(self, codes, scale, low):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))
        # The kernel reads weight = (code - 8) * scale + zero, as (groups, rows, 2) pairs.
        zero = low + 8 * scale
        pairs = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        self.register_buffer("scales_and_zeros", pairs)

    def forward(self, x):
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP, self.scales_and_zeros)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 in groups of {GROUP}"


def _grid_of(weight):
    """(codes, scale, low) when every 32-group of ``weight`` is low + code * scale, else None."""
    rows, cols = weight.shape
    groups = weight.float().reshape(rows, cols // GROUP, GROUP)
    low, high = torch.aminmax(groups, dim=-1, keepdim=True)
    step = (high - low).div_(LEVELS).clamp_(min=torch.finfo(torch.float32).tiny)
    position = (groups - low).div_(step)
    codes = position.round()
    if bool((position.sub_(codes).abs_() > TOLERANCE_STEPS).any()):
        return None
    return codes.to(torch.int32).reshape(rows, cols), step.squeeze(-1), low.squeeze(-1)


def _nibbles(codes):
    """Two 4-bit codes per byte (even column in the low half): half the disk of one per byte."""
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).to(torch.uint8)


def _from_nibbles(nibbles):
    codes = torch.empty(nibbles.shape[0], nibbles.shape[1] * 2, dtype=torch.int32)
    codes[:, 0::2] = nibbles & 0x0F
    codes[:, 1::2] = nibbles >> 4
    return codes
