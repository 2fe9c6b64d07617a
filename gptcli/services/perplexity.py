"""The mean token loss of a causal LM over texts, batched, every token scored once, nothing cut.

A text is tokenized as the model reads it (with the tokenizer's own special tokens) and
each token is scored by the log-probability the model gives it after the tokens before it;
the first token, having nothing before it, is context only. A text longer than one window
(the model's context, or less) is scored in overlapping windows: each window after the
first moves on by ``stride`` tokens and scores only the tokens no earlier window scored, so
every token but the first of a text is scored exactly once, each with at least
``window - stride`` tokens of context. Windows are right-padded into batches, so a text's
loss does not depend on what else is in its batch.

A sequence may also say which of its tokens count (``Tokens.counted``): a prompt and its
completion, say, where only the completion is scored and the prompt is context. The windows
are the same; a token that does not count is left out of the sum and the count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from gptcli.errors import UsageError

DEFAULT_WINDOW = 1024  # for a model whose config states no context; and the most one window holds by default
LOGITS_BYTES = 2**30  # the float32 logits of one batch: rows x window x vocabulary x 4 bytes stay under this


@dataclass(frozen=True)
class PerplexityParams:
    """``window``: tokens per forward pass (None: the model's context, at most DEFAULT_WINDOW);
    ``stride``: how far each further window moves (None: half the window)."""

    batch_size: int = 8  # windows per forward pass
    window: int | None = None
    stride: int | None = None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise UsageError(f"batch size must be at least 1, got {self.batch_size}")
        if self.window is not None and self.window < 2:
            raise UsageError(f"the window must hold at least 2 tokens, got {self.window}")
        if self.stride is not None and (self.stride < 1 or (self.window and self.stride >= self.window)):
            raise UsageError(f"the stride must be at least 1 and less than the window, got {self.stride}")


@dataclass(frozen=True)
class TextLoss:
    """Text ``index``: the mean loss of its scored tokens (None when it has none), and their count."""

    index: int
    loss: float | None
    tokens: int
    windows: int


@dataclass(frozen=True)
class Tokens:
    """A tokenized sequence to score; ``counted`` (one flag a token, None: all) says which tokens
    count towards its loss. The first token never counts: nothing predicts it."""

    ids: list[int]
    counted: list[bool] | None = None


@dataclass(frozen=True)
class Window:
    """Tokens ``ids`` of text ``text``, of which the last ``scored`` are scored; ``counted``
    (None: all of them) flags which of those last ``scored`` count."""

    text: int
    ids: list[int]
    scored: int
    counted: list[bool] | None = None

    @property
    def count(self) -> int:
        return self.scored if self.counted is None else sum(self.counted)


def window_size(lm, params: PerplexityParams) -> int:
    """The tokens one forward pass reads: the user's window, else the context up to DEFAULT_WINDOW.

    Raises:
        UsageError: a window longer than the model's context.
    """
    context = lm.context_length
    if params.window is not None:
        if context is not None and params.window > context:
            raise UsageError(f"the window of {params.window} tokens is longer than {lm.name}'s context of "
                             f"{context}; use {context} or less")
        return params.window
    return min(context or DEFAULT_WINDOW, DEFAULT_WINDOW)


def windows(ids: Sequence[int], text: int, size: int, stride: int,
            counted: Sequence[bool] | None = None) -> list[Window]:
    """The windows that score every token of ``ids`` but the first exactly once (those ``counted``
    flags, when given); a window with no token that counts is left out."""
    found: list[Window] = []
    scored_to = 1  # tokens before this one are scored (the first is never: nothing predicts it)
    begin = 0
    while scored_to < len(ids):
        end = min(begin + size, len(ids)) if len(ids) > size else len(ids)
        flags = None if counted is None else list(counted[scored_to:end])
        if flags is None or any(flags):
            found.append(Window(text, list(ids[begin:end]), end - scored_to, flags))
        scored_to = end
        begin += stride
    return found


def token_losses(lm, texts: Sequence[str], params: PerplexityParams) -> Iterator[TextLoss]:
    """The mean token loss of each of ``texts`` under the causal LM ``lm``, in order.

    Args:
        lm: a loaded causal LM (a LoadedModel, with an adapter applied if any).
        texts: the texts; one with fewer than two tokens has nothing to score (loss None, 0 tokens).
        params: batch size, window and stride.

    Raises:
        UsageError: a bad batch size, window or stride.
    """
    return sequence_losses(lm, [text_tokens(lm.tokenizer, text) for text in texts], params)


def sequence_losses(lm, sequences: Sequence[Tokens], params: PerplexityParams) -> Iterator[TextLoss]:
    """The mean loss of the counted tokens of each of ``sequences`` under the causal LM ``lm``, in order.

    Args:
        lm: a loaded causal LM (a LoadedModel, with an adapter applied if any).
        sequences: token ids, and which of them count (see ``Tokens``); one with no token that
            counts has nothing to score (loss None, 0 tokens).
        params: batch size, window and stride.

    Raises:
        UsageError: a bad batch size, window or stride.
    """
    from gptcli.engine.backends import engine_for

    params.validate()
    engine = engine_for(lm)
    size = window_size(lm, params)
    # A window's first token has nothing before it in the window: each must score at most size - 1.
    stride = min(params.stride or max(1, size // 2), size - 1)
    rows = min(params.batch_size, _rows_for_logits(lm, size))
    for start in range(0, len(sequences), rows):  # a batch of texts at a time: results flow as they are done
        chunk = sequences[start:start + rows]
        pieces = [windows(tokens.ids, start + offset, size, stride, tokens.counted)
                  for offset, tokens in enumerate(chunk)]
        flat = [piece for text_pieces in pieces for piece in text_pieces]
        sums = [0.0] * len(chunk)
        for batch_start in range(0, len(flat), rows):
            batch = flat[batch_start:batch_start + rows]
            for window, total in zip(batch, _window_loss_sums(engine, batch)):
                sums[window.text - start] += total
        for offset, text_pieces in enumerate(pieces):
            count = sum(piece.count for piece in text_pieces)
            yield TextLoss(start + offset, sums[offset] / count if count else None, count, len(text_pieces))


def text_tokens(tokenizer, text: str) -> Tokens:
    """A text as it is scored: tokenized as the model reads it (its special tokens too), every token counted."""
    return Tokens(list(tokenizer(text, add_special_tokens=True)["input_ids"]))


def _rows_for_logits(lm, size: int) -> int:
    """Windows per batch whose float32 logits stay under LOGITS_BYTES (a 49k vocabulary x 1024 tokens is 200 MB a row)."""
    vocabulary = getattr(lm.model.config, "vocab_size", None) or len(lm.tokenizer)
    return max(1, LOGITS_BYTES // (size * vocabulary * 4))


def _window_loss_sums(engine, batch: list[Window]) -> list[float]:
    """The summed loss (nats) of each window's counted tokens: one right-padded forward pass."""
    sums = []
    for window, losses in zip(batch, engine.token_losses([(window.ids, window.scored) for window in batch])):
        counted = losses if window.counted is None else [loss for loss, kept in zip(losses, window.counted) if kept]
        sums.append(sum(counted))
    return sums
