"""Which engine runs a loaded model's generation requests."""

from __future__ import annotations


def engine_for(lm, batch_size: int = 8, max_batch_tokens: int | None = None, stats=None):
    """llama.cpp's engine when it holds the weights (--engine llama.cpp), else the transformers
    scheduler with ``batch_size`` rows and ``max_batch_tokens``."""
    if lm.native is not None:
        from gptcli.engine.llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine(lm, stats, rows=batch_size)
    from gptcli.engine.transformers_engine import TransformersEngine

    return TransformersEngine(lm, batch_size, max_batch_tokens, stats)
