"""Picking each running row's next token from its logits, whatever engine made the logits.

The scheduler (transformers) and the llama.cpp engine both hand their logits here, so a
request's tokens follow the same samplers, random streams, penalties, constraints, stop strings
and log-probabilities on either: the engines differ only in how the logits are computed.
"""

from __future__ import annotations

from gptcli.engine.api import Event, Finished, GenerationStats, Request, TokenLogprob
from gptcli.engine.decoding import RowText
from gptcli.engine.rows import Row

MAX_PICKERS = 64  # samplers kept for settings no queued or running request uses any more


class Picking:
    """New rows for requests, and their next tokens from logits (torch tensors, a row each)."""

    def __init__(self, lm, device, pad_id: int, eos_ids: set[int], stats: GenerationStats):
        self.lm, self.tokenizer, self.device = lm, lm.tokenizer, device
        self.pad_id, self.eos_ids, self.stats = pad_id, eos_ids, stats
        self.pickers: dict = {}

    def new_row(self, request: Request, position: int) -> Row:
        """A row for ``request`` whose next fed token sits at ``position``."""
        picker = self.picker(request.sampling)
        stream = picker.generators([request.key])
        return Row(request, RowText(self.tokenizer, request.stop), stream[0] if stream else None,
                   position=position, history=list(request.ids) if picker.needs_history else None,
                   logprobs=[] if request.logprobs is not None else None, grammar=self._grammar(request))

    def advance(self, rows: list[Row], logits, events: list[Event]) -> list[int]:
        """Pick each row's next token; advance the rows; the indices of those still running."""
        picked = self._pick(rows, logits)
        self.stats.mark_first_token()
        alive = []
        for n, row in enumerate(rows):
            token, logprob = picked[n]
            made = row.advance(token, self.eos_ids, logprob)
            events.extend(made)
            if made and isinstance(made[-1], Finished):
                self.stats.generated_tokens += made[-1].generated_tokens
            else:
                alive.append(n)
        return alive

    def picker(self, sampling):
        from gptcli.engine.sampling import TokenPicker

        picker = self.pickers.get(sampling)
        if picker is None:
            picker = self.pickers[sampling] = TokenPicker(sampling, self.device)
        return picker

    def forget_unused(self, used: set) -> None:
        """Drop samplers beyond MAX_PICKERS that no request in ``used`` (their settings) needs:
        a server sees a new seed or temperature with each request."""
        if len(self.pickers) > MAX_PICKERS:
            self.pickers = {k: v for k, v in self.pickers.items() if k in used}

    def _grammar(self, request: Request):
        if request.constraint is None:
            return None
        from gptcli.engine.constraints import RowGrammar, grammar_tokenizer

        return RowGrammar(grammar_tokenizer(self.lm), request.constraint)

    def _pick(self, rows: list[Row], logits) -> list[tuple[int, TokenLogprob | None]]:
        """One token per row; rows with the same sampling settings are picked together."""
        import torch

        from gptcli.engine.scheduler import left_pad

        picked: list = [None] * len(rows)
        raw, logits = logits, _constrained(rows, logits)
        groups: dict = {}
        for n, row in enumerate(rows):
            groups.setdefault(row.request.sampling, []).append(n)
        for sampling, members in groups.items():
            picker = self.picker(sampling)
            index = torch.tensor(members, device=logits.device)
            group_logits = logits.index_select(0, index)
            history = None
            if picker.needs_history:
                history, _ = left_pad([rows[n].history for n in members], self.pad_id, logits.device)
            streams = [rows[n].stream for n in members] if not picker.greedy else None
            generated = [rows[n].text.ids for n in members] if picker.needs_generated else None
            tokens = picker(history, group_logits, streams, generated).tolist()
            for k, n in enumerate(members):  # the model's own log-probabilities, before any constraint
                picked[n] = (tokens[k], _logprob(raw[n], tokens[k], rows[n].request.logprobs))
        return picked


def _constrained(rows: list[Row], logits):
    """The logits with every token a row's grammar does not allow next set to -inf."""
    members = [n for n, row in enumerate(rows) if row.grammar is not None]
    if not members:
        return logits
    import torch

    from gptcli.engine.constraints import allowed_tokens

    allowed = allowed_tokens([rows[n].grammar for n in members], logits.shape[-1], logits.device)
    index = torch.tensor(members, device=logits.device)
    masked = logits.index_select(0, index).masked_fill(~allowed, float("-inf"))
    return logits.index_copy(0, index, masked)


def _logprob(logits, token: int, top: int | None) -> TokenLogprob | None:
    """The model's log-probability of the picked token (before sampling warpers), and the top ``top``."""
    if top is None:
        return None
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    best = ()
    if top > 0:
        values, indices = logprobs.topk(top)
        best = tuple(zip(indices.tolist(), values.tolist()))
    return TokenLogprob(token, float(logprobs[token]), best)
