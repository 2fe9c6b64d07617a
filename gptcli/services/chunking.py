"""Split text into pieces that fit a token budget, on the most natural boundary available.

Paragraphs first (blank lines), then sentences, then words, and token windows
only as the last resort (a single "word" longer than the budget, such as a URL
or a line of CJK text without spaces). Every character of the input ends up in
exactly one piece, in order: nothing is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# A sentence ends at . ! ? (and their CJK forms) followed by space, or at a CJK stop
# directly (CJK text has no spaces between sentences).
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|(?<=[。！？])")
# Scripts written without spaces between words or sentences.
_NO_SPACE_SCRIPTS = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


class TokenCounter:
    """Counts a tokenizer's tokens for plain text (no special tokens) and cuts by tokens."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def count(self, text: str) -> int:
        return len(self._ids(text))

    def cut(self, text: str, budget: int) -> list[str]:
        """Token windows of at most ``budget`` tokens, decoded back to text."""
        ids = self._ids(text)
        return [self._tokenizer.decode(ids[i:i + budget], skip_special_tokens=True)
                for i in range(0, len(ids), budget)]

    def _ids(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class _Level:
    split: Callable[[str], list[str]]
    joiner: str


def split_paragraphs(text: str) -> list[str]:
    return [part.strip() for part in _PARAGRAPH_BREAK.split(text) if part.strip()]


def split_sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text) if part and part.strip()]


def _split_words(text: str) -> list[str]:
    return text.split()


_LEVELS = (_Level(split_paragraphs, "\n\n"), _Level(split_sentences, " "), _Level(_split_words, " "))


def split_to_fit(text: str, budget: int, counter: TokenCounter) -> list[str]:
    """Pieces of ``text``, each at most ``budget`` tokens, in order, covering all of it.

    Args:
        text: the text to split.
        budget: the most tokens (without special tokens) a piece may have; at least 1.
        counter: counts and cuts tokens for the model's tokenizer.

    Returns:
        ``[text.strip()]`` when it fits already; otherwise the pieces, each made of
        as many whole paragraphs (or sentences, or words) as fit.
    """
    if budget < 1:
        raise ValueError(f"budget must be at least 1 token, got {budget}")
    text = text.strip()
    if not text:
        return []
    if counter.count(text) <= budget:
        return [text]
    return _split(text, budget, counter, 0)


def _split(text: str, budget: int, counter: TokenCounter, level: int) -> list[str]:
    if level >= len(_LEVELS):
        return counter.cut(text, budget)
    parts = _LEVELS[level].split(text)
    if len(parts) <= 1:  # no boundary of this kind inside: try a finer one
        return _split(text, budget, counter, level + 1)
    joiner = _joiner(_LEVELS[level].joiner, text)
    pieces: list[str] = []
    for piece in _pack(parts, budget, counter, joiner):
        if counter.count(piece) <= budget:
            pieces.append(piece)
        else:  # one part alone is too long (or merging across the joiner added tokens)
            pieces.extend(_split(piece, budget, counter, level + 1))
    return pieces


def _joiner(joiner: str, text: str) -> str:
    # Sentences of Chinese or Japanese are rejoined without the space a Latin text needs.
    return "" if joiner == " " and _NO_SPACE_SCRIPTS.search(text) and " " not in text else joiner


def _pack(parts: list[str], budget: int, counter: TokenCounter, joiner: str) -> list[str]:
    """Greedily join consecutive parts while their summed counts stay within the budget.

    Summed counts can be off by a token at a joint; the caller re-counts each piece.
    """
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for part in parts:
        size = counter.count(part) + (1 if current else 0)
        if current and used + size > budget:
            pieces.append(joiner.join(current))
            current, used = [], 0
            size = counter.count(part)
        current.append(part)
        used += size
    if current:
        pieces.append(joiner.join(current))
    return pieces


def rejoin(pieces: list[str]) -> str:
    """Join translated pieces of one line back together (no spaces for CJK output)."""
    kept = [piece.strip() for piece in pieces if piece.strip()]
    return _joiner(" ", "".join(kept)).join(kept)
