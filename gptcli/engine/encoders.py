"""The engine for encoder models (sentence embeddings, classifier heads): a batch in, numbers out.

Pooling, normalising and batching texts into vectors are services.embed's work.
"""

from __future__ import annotations


class EncoderEngine:
    """Runs a LoadedModel of kind embedding or sequence-classifier on tokenized batches."""

    def __init__(self, lm):
        self.model = lm.model

    def logits(self, batch):
        """The classifier head's logits (float32, on the CPU), one row per input."""
        import torch

        with torch.inference_mode():
            return self.model(**batch).logits.float().cpu()

    def token_states(self, batch):
        """The last hidden state of every token (batch, tokens, width), on the model's device.

        A causal LM set up as an embedding model runs without its LM head (``base_model``): the
        head's vocabulary-wide logits would cost more than the model and are not used.
        """
        import torch

        with torch.inference_mode():
            return self.base(**batch).last_hidden_state

    @property
    def base(self):
        base = getattr(self.model, "base_model", None)
        return self.model if base is None else base
