"""Token states to one vector per text: sentence-transformers' pooling modes, in float32.

Each mode reads only the real tokens (the attention mask), so a text's vector does not depend
on how much padding its batch needed, nor on the side the tokenizer pads.
"""

from __future__ import annotations


def pool(hidden, mask, modes: tuple[str, ...]):
    """``hidden`` (batch, tokens, width) pooled over the tokens ``mask`` marks, one block per mode.

    Args:
        hidden: the model's last hidden states.
        mask: the attention mask (batch, tokens), 1 on real tokens.
        modes: models.sentence.POOLING_MODES, concatenated in this order (as sentence-transformers does).

    Returns:
        A float32 tensor (batch, width x len(modes)).
    """
    import torch

    hidden = hidden.float()
    mask = mask.to(hidden.device)
    return torch.cat([_POOLERS[mode](hidden, mask) for mode in modes], dim=-1)


def _mean(hidden, mask):
    weights = mask.unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _mean_sqrt_len(hidden, mask):
    weights = mask.unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9).sqrt()


def _cls(hidden, mask):
    import torch

    first = mask.int().argmax(dim=1)  # the first real token, wherever the padding is
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]


def _max(hidden, mask):
    return hidden.masked_fill(mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values


def _last_token(hidden, mask):
    import torch

    tokens = mask.shape[1]
    # The last real token: right padding puts it before the pads, left padding at the end.
    seen, from_end = mask.flip(1).max(1)
    last = torch.where(seen == 0, tokens - 1, tokens - 1 - from_end)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _weighted_mean(hidden, mask):
    import torch

    # Later tokens weigh more (1, 2, 3 ... from the first real token), as sentence-transformers weighs them.
    positions = torch.arange(1, mask.shape[1] + 1, device=hidden.device, dtype=torch.float32).unsqueeze(0)
    start = mask.int().argmax(dim=1, keepdim=True).float()
    weights = (mask.float() * (positions - start)).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


_POOLERS = {"mean": _mean, "mean_sqrt_len_tokens": _mean_sqrt_len, "cls": _cls, "max": _max,
            "lasttoken": _last_token, "weightedmean": _weighted_mean}
