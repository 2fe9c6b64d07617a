"""The engine for encoder models (sentence embeddings, classifier heads): a batch in, numbers out."""

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

    def embed(self, batch):
        """Sentence vectors: the last hidden states mean-pooled over real tokens, normalised (CPU)."""
        import torch

        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1).cpu()
