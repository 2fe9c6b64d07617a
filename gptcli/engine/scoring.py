"""Log-probabilities of given tokens, for classify's label scoring and eval's perplexity.

Rows are right-padded: every real token sits at its true position and, attention being
causal, never sees a pad, whatever the model.
"""

from __future__ import annotations


class PrefixScorer:
    """Scores answers after prompts that share ``prefix`` (system prompt, instructions, examples):
    the prefix runs once and its KV cache is reused. A row that does not start with the prefix
    (a tokenizer merging across the boundary) runs without the cache."""

    def __init__(self, model, pad_id: int, prefix: list[int]):
        self.model = model
        self.pad_id = pad_id
        self.ids = list(prefix)
        self.cache = _run_prefix(model, self.ids) if self.ids else None

    def answer_logprobs(self, rows: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """Each row's answer tokens' log-probabilities after its prompt: one forward pass."""
        n = len(self.ids)
        if self.cache is not None and all(len(p) > n and p[:n] == self.ids for p, _a in rows):
            return _answer_logprobs(self.model, [(p[n:], a) for p, a in rows], self.pad_id, self.cache, n)
        return _answer_logprobs(self.model, rows, self.pad_id, None, 0)


def _run_prefix(model, ids: list[int]):
    import torch

    from gptcli.engine.kvcache import returned_cache

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids], device=model.device), use_cache=True, logits_to_keep=1)
    return returned_cache(out)


def _answer_logprobs(model, rows, pad_id: int, cache, offset: int) -> list[list[float]]:
    """Score right-padded ``rest + answer`` rows after an optional cached prefix of ``offset`` tokens."""
    import copy

    import torch

    from gptcli.engine.kvcache import cache_argument

    width = max(len(rest) + len(answer) for rest, answer in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), offset + width), dtype=torch.long)
    mask[:, :offset] = 1
    for r, (rest, answer) in enumerate(rows):
        ids[r, :len(rest) + len(answer)] = torch.tensor(rest + answer)
        mask[r, offset:offset + len(rest) + len(answer)] = 1
    past = None
    if cache is not None:
        past = copy.deepcopy(cache)  # the forward pass appends to it; keep the prefix's own clean
        past.batch_repeat_interleave(len(rows))
    positions = torch.arange(offset, offset + width).expand(len(rows), width)
    device = model.device
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                       use_cache=cache is not None, **{cache_argument(model): past}).logits
    scores = []
    for r, (rest, answer) in enumerate(rows):
        start = len(rest)  # the first answer token; the logits one step earlier predict it
        logprobs = logits[r, start - 1:start - 1 + len(answer)].float().log_softmax(-1)
        scores.append(logprobs.gather(-1, torch.tensor(answer, device=logprobs.device)[:, None])[:, 0].tolist())
    return scores


def token_losses(model, pad_id: int, windows: list[tuple[list[int], int]]) -> list[list[float]]:
    """The loss (nats) of each window's last ``scored`` tokens given the ones before: one pass.

    Args:
        windows: (token ids, how many of the last tokens to score) per row; scored < len(ids).
    """
    import torch

    width = max(len(ids) for ids, _ in windows)
    batch = torch.full((len(windows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    for row, (ids, _scored) in enumerate(windows):
        batch[row, :len(ids)] = torch.tensor(ids)
        mask[row, :len(ids)] = 1
    positions = torch.arange(width).expand(len(windows), width)
    device = model.device
    losses = []
    with torch.inference_mode():
        logits = model(input_ids=batch.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                       use_cache=False).logits
        for row, (ids, scored) in enumerate(windows):
            first = len(ids) - scored  # the first scored token; the logits one step earlier predict it
            predicted = logits[row, first - 1:len(ids) - 1].float()
            targets = batch[row, first:len(ids)].to(predicted.device)
            losses.append(torch.nn.functional.cross_entropy(predicted, targets, reduction="none").tolist())
    return losses
