"""The engine for encoder-decoder models (Marian, NLLB, BART, T5): whole batches through
transformers' own ``generate``, which runs their beam search and forced tokens as each model's
generation config asks."""

from __future__ import annotations


class Seq2SeqEngine:
    """Runs a LoadedModel of kind seq2seq."""

    def __init__(self, lm):
        self.model = lm.model

    @property
    def generation_config(self):
        return self.model.generation_config

    def generate(self, encoded: dict, max_new_tokens: int, **options):
        """The output token ids (rows x steps, decoder start token first) for a tokenized batch."""
        import torch

        encoded = {k: v.to(self.model.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            return self.model.generate(**encoded, max_new_tokens=max_new_tokens, **options), encoded
