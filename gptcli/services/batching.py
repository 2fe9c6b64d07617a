"""How many sequences to run at once when the user leaves --batch-size at 0."""

from __future__ import annotations

# On CPU, SmolLM2 on 2 cores, 256 prompts x 64 tokens (benchmarks/batch.py): 16 rows 4.8 prompts/s
# at 738 MiB, 32 rows 7.5 at 787 MiB, 64 rows 9.7 at 969 MiB. 32 keeps peak memory within 1.2x of
# one-at-a-time transformers; --batch-size 64 trades memory for the last 30%.
CPU_MAX_BATCH = 32
GPU_MAX_BATCH = 64
# Rows x (prompt + new tokens) per batch on CPU. Long inputs (summarize's paragraphs) at 32 rows
# grew peak RSS to 1.3x one-at-a-time transformers (prefill activations and KV cache); 4096 keeps
# it near 1.15x and leaves short prompts (generate's 256, ~100 tokens each) at the full 32 rows.
CPU_BATCH_TOKENS = 4096
MEMORY_SHARE = 0.3  # of the free memory, for the KV cache of one batch


def auto_batch_size(lm, longest_tokens: int) -> int:
    """A batch size whose KV cache for ``longest_tokens`` per row fits a share of free memory."""
    per_row = _kv_bytes_per_token(lm) * max(1, longest_tokens)
    budget = _free_memory_bytes(lm.device) * MEMORY_SHARE
    cap = GPU_MAX_BATCH if str(lm.device).startswith("cuda") else CPU_MAX_BATCH
    return max(1, min(cap, int(budget // max(per_row, 1))))


def batch_token_budget(lm) -> int | None:
    """The most rows x tokens one batch may hold, or None for no limit (GPUs: rows decide)."""
    return None if str(lm.device).startswith("cuda") else CPU_BATCH_TOKENS


def auto_batched(params, lm, auto: bool, tokens_per_row: int):
    """``params`` with a batch size chosen from free memory, unless the user gave one (``auto``
    false); params that generate (a ``max_batch_tokens`` field) also get the per-batch token budget.

    Returns:
        (params, the --verbose line for the choice, or None when there was none to make).
    """
    from dataclasses import fields, replace

    if not auto:
        return params, None
    params = replace(params, batch_size=auto_batch_size(lm, tokens_per_row))
    budget = batch_token_budget(lm) if "max_batch_tokens" in {f.name for f in fields(params)} else None
    if budget:
        params = replace(params, max_batch_tokens=budget)
    return params, describe_auto_batch(params.batch_size, budget)


def describe_auto_batch(rows: int, max_tokens: int | None) -> str:
    """The --verbose line for an automatic choice."""
    limit = f", at most {max_tokens} tokens a batch" if max_tokens else ""
    return f"batch size {rows} (chosen from free memory){limit}"


def _kv_bytes_per_token(lm) -> int:
    config = lm.model.config
    config = getattr(config, "text_config", None) or config
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 12)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 12)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 768)
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    element = lm.model.dtype.itemsize if hasattr(lm.model.dtype, "itemsize") else 4
    return 2 * layers * kv_heads * head_dim * element


def _free_memory_bytes(device) -> int:
    if str(device).startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return free
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30
