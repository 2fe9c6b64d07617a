"""One running request inside the batch: its text so far, its random stream, its position."""

from __future__ import annotations

from dataclasses import dataclass, field

from gptcli.engine.api import (FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Delta, Finished, Request,
                               TokenLogprob)
from gptcli.engine.decoding import RowText


@dataclass
class Row:
    request: Request
    text: RowText
    stream: object  # torch.Generator, or None when greedy
    position: int  # the position of the token fed next
    last: int = 0  # the token fed next (the one just picked)
    history: list[int] | None = None  # prompt + generated ids, for penalties that read them
    logprobs: list[TokenLogprob] | None = None
    grammar: object = None  # a constraints.RowGrammar when the request has a constraint
    lookup: object = None  # a lookup.PromptLookup once the row has run alone (engine/speculative.py)
    pause: int = 0  # plain steps left before the row guesses again
    _logprobs_sent: int = field(default=0, repr=False)

    def advance(self, token: int, eos_ids: set[int], logprob: TokenLogprob | None) -> list:
        """Take one picked token; the events it makes (a Delta, a Finished, or none)."""
        if self.logprobs is not None and logprob is not None:
            self.logprobs.append(logprob)
        reason = self._finish_reason(token, eos_ids)
        self.last = token
        self.position += 1
        if self.history is not None:
            self.history.append(token)
        if reason is None:
            return self._delta(final=False)
        return [*self._delta(final=True), self.finished(reason)]

    def finished(self, reason: str) -> Finished:
        generated = len(self.text.ids) + (reason == FINISH_EOS)  # the EOS token was generated too
        logprobs = tuple(self.logprobs) if self.logprobs is not None else None
        return Finished(self.request.id, self.text.text(), len(self.request.ids), generated, reason, logprobs)

    def _finish_reason(self, token: int, eos_ids: set[int]) -> str | None:
        if token in eos_ids:
            return FINISH_EOS
        if self.grammar is not None:
            self.grammar.take(token)
        if self.text.add(token):
            return FINISH_STOP
        if self.grammar is not None and self.grammar.complete:  # whole: only EOS could follow
            return FINISH_STOP
        if len(self.text.ids) >= self.request.max_new_tokens:
            return FINISH_LENGTH
        return None

    def _delta(self, final: bool) -> list[Delta]:
        if not self.request.stream:
            return []
        text = self.text.delta(final=final)
        logprobs = ()
        if self.logprobs is not None:
            logprobs = tuple(self.logprobs[self._logprobs_sent:])
            self._logprobs_sent = len(self.logprobs)
        return [Delta(self.request.id, text, logprobs)] if text or logprobs else []
