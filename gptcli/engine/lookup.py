"""Drafts by prompt lookup: the tokens that followed the last few tokens where they appeared before.

Summaries, translations of names, code edits and chat answers that quote the question repeat
runs of their own context. When the last ``NGRAM`` tokens of a row (prompt and generated text)
appeared earlier, the tokens that followed them there are a guess at what comes next; the
scheduler has the model check the whole guess in one forward pass (speculative decoding with
no second model). The index is kept per row and grows by one entry per token.
"""

from __future__ import annotations

NGRAM = 3  # tokens that must match: shorter matches guess wrong too often to pay for the check


class PromptLookup:
    """The most recent earlier place of every ``NGRAM``-token run of a sequence, as it grows."""

    def __init__(self, tokens: list[int], ngram: int = NGRAM):
        self.ngram = ngram
        self.tokens: list[int] = []
        self._after: dict[tuple[int, ...], int] = {}  # run -> the index just past its latest earlier place
        for token in tokens:
            self.append(token)

    def append(self, token: int) -> None:
        # The run ending just before this token now has a continuation (this token): index it.
        end = len(self.tokens)
        if end >= self.ngram:
            self._after[tuple(self.tokens[end - self.ngram:end])] = end
        self.tokens.append(token)

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            self.append(token)

    def draft(self, most: int) -> list[int]:
        """Up to ``most`` tokens that followed the last run where it appeared before; [] if it did not."""
        if most < 1 or len(self.tokens) < self.ngram:
            return []
        start = self._after.get(tuple(self.tokens[-self.ngram:]))
        if start is None:
            return []
        return self.tokens[start:start + most]
