"""A lean decode step for Llama-family models: the same arithmetic as transformers' forward, fewer operators.

Why: decoding one token at a time on a CPU, a third of each step of the default model went to the small
operators and Python around the matrix products in transformers' generic forward (masks built for any
shape, attention dispatch, output records, three products where one would do). For a few new tokens per row
this module runs the same layers itself:

- q, k and v in one product, and gate and up in one, over weights concatenated once (the projections'
  own weights become views of the joined tensor, so the modules still work for transformers' own forward,
  which prefill uses; the originals' pages of the memory-mapped weights file are given back, engine/filepages.py);
- RMSNorm, rotary embeddings, the cache update and SDPA exactly as transformers computes them, so the
  logits are bit for bit the same (tests/engine/test_lean_llama.py checks, with padding and in bf16).

It takes over only where that holds: a LlamaForCausalLM of its own class, SDPA attention, SiLU, no biases,
plain or int4-packed linear layers (no LoRA wrappers, no accelerate hooks), eval mode. Anything else gets
None and transformers' forward. GPTCLI_LEAN_DECODE=0 turns it off (to compare).
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch
import torch.nn.functional as F

DISABLE = "GPTCLI_LEAN_DECODE"


def lean_decoder(model) -> "LeanDecoder | None":
    """The lean decode step for ``model``, built once and kept on it; None where it would not be exact."""
    cached = getattr(model, "_gptcli_lean", False)
    if cached is False:
        cached = LeanDecoder(model) if _eligible(model) else None
        model._gptcli_lean = cached
    return cached if os.environ.get(DISABLE, "1") != "0" else None


def _eligible(model) -> bool:
    from gptcli.models.int4 import PackedInt4Linear

    if type(model).__name__ != "LlamaForCausalLM" or model.training:
        return False
    config = model.config
    if (getattr(config, "_attn_implementation", None) != "sdpa" or config.hidden_act != "silu"
            or getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)
            or getattr(config, "pretraining_tp", 1) != 1):
        return False
    if any(hasattr(module, "_hf_hook") for module in model.modules()):  # accelerate places or offloads it
        return False
    allowed = (torch.nn.Linear, PackedInt4Linear)
    for layer in model.model.layers:
        projections = (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                       layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)
        if any(type(p) not in allowed for p in projections):  # a LoRA layer, a quantizer's own ...
            return False
    return type(model.lm_head) in allowed


class LeanDecoder:
    """One decode step (new tokens per row, after cached ones) of a LlamaForCausalLM."""

    def __init__(self, model):
        self.model = model
        config = model.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.layers = [_LeanLayer(layer, self.heads, self.kv_heads) for layer in model.model.layers]

    @torch.no_grad()
    def step(self, ids, attention, positions, cache):
        """Logits of the new positions, as transformers' forward returns them (``logits_to_keep`` = their number).

        ``ids`` and ``positions``: rows x new (one token per row while decoding; a token and its guessed
        continuation for engine/speculative.py); ``attention``: rows x (cached columns + new), 1 where a row
        attends; ``cache``: the transformers Cache that holds the earlier columns (updated in place).
        """
        inner = self.model.model
        hidden = inner.embed_tokens(ids)
        cos, sin = inner.rotary_emb(hidden, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden, cos, sin, _mask(attention, ids.shape[1]), cache, index)
        logits = self.model.lm_head(_rms_norm(inner.norm, hidden))
        return SimpleNamespace(logits=logits, cache=cache, past_key_values=cache)


def _mask(attention, new: int):
    """The attention mask for SDPA: None where every row attends to every column (one new token, no padding).

    transformers drops an all-ones mask for SDPA and then lets SDPA group the heads itself; with a mask it
    folds the query heads onto the key/value heads (pack_gqa): each kernel as it would choose. Several new
    tokens also attend causally among themselves.
    """
    if new == 1:
        return None if bool(attention.all()) else attention.bool()[:, None, None, :]
    columns = attention.shape[1]
    causal = torch.ones((new, columns), dtype=torch.bool, device=attention.device).tril(columns - new)
    return attention.bool()[:, None, None, :] & causal


class _LeanLayer:
    def __init__(self, layer, heads: int, kv_heads: int):
        attention, mlp = layer.self_attn, layer.mlp
        self.input_norm, self.post_norm = layer.input_layernorm, layer.post_attention_layernorm
        self.head_dim, self.heads, self.kv_heads = attention.head_dim, heads, kv_heads
        self.scaling = attention.scaling
        self.o_proj, self.down_proj = attention.o_proj, mlp.down_proj
        self.qkv = _joined([attention.q_proj, attention.k_proj, attention.v_proj])
        self.gate_up = _joined([mlp.gate_proj, mlp.up_proj])

    def __call__(self, hidden, cos, sin, mask, cache, index: int):
        rows, new = hidden.shape[:2]
        x = _rms_norm(self.input_norm, hidden)
        q, k, v = self.qkv(x)
        q = q.view(rows, new, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(rows, new, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(rows, new, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = _rotated(q, cos, sin), _rotated(k, cos, sin)
        k, v = cache.update(k, v, index)
        out = self._attend(q, k, v, mask)
        hidden = hidden + self.o_proj(out.transpose(1, 2).reshape(rows, new, -1))
        gate, up = self.gate_up(_rms_norm(self.post_norm, hidden))
        return hidden + self.down_proj(F.silu(gate) * up)

    def _attend(self, q, k, v, mask):
        groups = self.heads // self.kv_heads
        if groups == 1:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        if mask is None or q.shape[2] > 1:  # several new tokens: their causal mask differs per query
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=True)
        rows, _, _, width = q.shape
        packed = F.scaled_dot_product_attention(q.reshape(rows, self.kv_heads, groups, width), k, v,
                                                attn_mask=mask, scale=self.scaling)
        return packed.reshape(rows, self.heads, 1, width)


def _joined(projections):
    """One product for several projections of the same input, returning their outputs apart.

    Plain linear layers are joined: one weight tensor, of which each layer's weight becomes a view.
    int4-packed layers are joined in a copy of their codes and scales (the kernel needs its scales
    contiguous, which views of one tensor are not): a few MiB, for two kernel calls fewer per layer.
    """
    from gptcli.models.int4 import PackedInt4Linear

    if all(type(p) is PackedInt4Linear for p in projections):
        return _joined_int4(projections)
    if any(type(p) is not torch.nn.Linear for p in projections):
        return lambda x: tuple(p(x) for p in projections)
    from gptcli.engine import filepages

    sizes = [p.out_features for p in projections]
    originals = [p.weight.detach() for p in projections]
    joined = torch.cat(originals)
    start = 0
    for projection, size in zip(projections, sizes):
        projection.weight = torch.nn.Parameter(joined[start:start + size], requires_grad=False)
        start += size
    filepages.release(originals)  # their file pages would otherwise stay resident beside the copy
    return lambda x: F.linear(x, joined).split(sizes, dim=-1)


def _joined_int4(projections):
    """PackedInt4Linear's product over the projections' codes and scales side by side (rows of the
    output are independent, so each comes out as its own layer's)."""
    from gptcli.models.int4 import GROUP

    sizes = [p.out_features for p in projections]
    width = projections[0].in_features
    packed = torch.cat([p.packed for p in projections])
    scales = torch.cat([p.scales_and_zeros for p in projections], dim=1).contiguous()

    def product(x):
        flat = x.reshape(-1, width).to(torch.bfloat16)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, packed, GROUP, scales)
        return out.reshape(*x.shape[:-1], -1).split(sizes, dim=-1)

    return product


def _rms_norm(norm, hidden):
    """LlamaRMSNorm's own arithmetic (float32 inside, then back), without its module call."""
    dtype = hidden.dtype
    x = hidden.to(torch.float32)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * x.to(dtype)


def _rotated(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
