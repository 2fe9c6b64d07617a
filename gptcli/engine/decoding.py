"""Token ids to text while generating: streamed deltas and stop strings."""

from __future__ import annotations


class RowText:
    """The text of one generated row, kept in step with its tokens.

    Streams only text that is final: not a dangling half UTF-8 character, and
    not a tail that could still become a stop string.
    """

    def __init__(self, tokenizer, stops: tuple[str, ...]):
        self._tokenizer = tokenizer
        self._stops = tuple(s for s in stops if s)
        self._tail_tokens = max((len(s) for s in self._stops), default=0) + 2
        self.ids: list[int] = []
        self._streamed = 0
        self.stopped_at: int | None = None  # char offset of the stop string, once seen

    def add(self, token_id: int) -> bool:
        """Record a token; True when a stop string has now appeared."""
        self.ids.append(token_id)
        if not self._stops:
            return False
        # A stop string shorter than N chars lies within the last N+2 tokens: decode only those.
        tail = self._decode(self.ids[-self._tail_tokens:])
        if any(stop in tail for stop in self._stops):
            full = self._decode(self.ids)
            self.stopped_at = min(i for i in (full.find(s) for s in self._stops) if i >= 0)
            return True
        return False

    def text(self) -> str:
        full = self._decode(self.ids)
        return full if self.stopped_at is None else full[: self.stopped_at]

    def delta(self, final: bool = False) -> str:
        """The text not yet streamed that is safe to show now."""
        text = self.text()
        if not final:
            if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
                return ""
            text = text[: len(text) - self._possible_stop_prefix(text)]
        new = text[self._streamed:]
        self._streamed = max(self._streamed, len(text))
        return new

    def _possible_stop_prefix(self, text: str) -> int:
        """Length of the longest tail of ``text`` that begins some stop string."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if stop.startswith(text[-size:]):
                    longest = size
                    break
        return longest

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)
