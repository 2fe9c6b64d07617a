"""Sentence vectors: the one way gptcli embeds texts (`gptcli embed`, /v1/embeddings, classify's
embedding scorer).

A model's vectors are made as its own sentence-transformers config says (models.sentence:
pooling, Normalize, max length, default prompt); a plain encoder without one is mean-pooled and
normalised. Every text is counted in tokens before the first is embedded, so a text longer than
the model's limit stops the run before any work (or, with ``truncate``, is cut and counted).
Texts are sorted by length within windows of the input, so batches carry little padding, and
each window's vectors come back in input order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Sequence

from gptcli.errors import InputError, UsageError

# Texts per forward pass. MiniLM on 2 CPU cores (benchmarks/embed.py): 16 rows ran slower than 32,
# and 64 or 128 no faster; sentence-transformers' default is 32 too.
DEFAULT_BATCH_SIZE = 32
GPU_BATCH_SIZE = 128  # not measured here (no GPU): small encoders need wide batches to keep a GPU busy
# Texts sorted together by length. Within 1024 texts the padding left is a few percent, and an
# --output run writes (and so can resume) every window as it ends.
SORT_WINDOW = 1024
COUNT_CHUNK = 4096  # texts tokenized at once when counting (only their lengths are kept)


@dataclass(frozen=True)
class EmbedParams:
    """``normalize``: None = what the model's config says (unit length when it has none);
    ``truncate``: cut texts longer than the model's limit instead of refusing them."""

    batch_size: int = DEFAULT_BATCH_SIZE
    normalize: bool | None = None
    truncate: bool = False
    # The model's whole context instead of sentence-transformers' max_seq_length (MiniLM: 512, not
    # 256): classify's scorer has always taken texts that long, and refusing them now would break runs.
    full_context: bool = False


@dataclass(frozen=True)
class Recipe:
    """How one model's vectors are made."""

    pooling: tuple[str, ...]
    normalize: bool
    max_tokens: int | None  # the most tokens a text may have (special tokens included)
    prompt: str = ""
    lowercase: bool = False
    from_config: bool = False  # the model's sentence-transformers config said so

    def describe(self) -> str:
        pooling = "+".join(self.pooling)
        norm = "unit length" if self.normalize else "not normalised"
        limit = f", at most {self.max_tokens} tokens a text" if self.max_tokens else ""
        why = "as its sentence-transformers config says" if self.from_config else \
            "no sentence-transformers config: mean pooling"
        return f"{pooling} pooling, {norm}{limit} ({why})"


@dataclass
class EmbedStats:
    texts: int = 0
    tokens: int = 0
    truncated: int = 0  # texts cut to the limit
    recipe: Recipe | None = None  # how the vectors were made (its max_tokens: the limit)


class TextTooLong(InputError):
    """A text longer than the model's limit; ``at(where)`` says it for a front door's own naming."""

    def __init__(self, text: str, index: int, tokens: int | None, limit: int):
        self.index, self.tokens, self.limit = index, tokens, limit
        self.characters = len(text)
        super().__init__(self.at(f"text {text[:40]!r}"))

    def at(self, where: str, fix: str = "shorten it") -> str:
        size = (f"{self.tokens} tokens, more than" if self.tokens is not None
                else f"{self.characters:,} characters, far more than")
        return f"{where} is {size} the embedding model's limit of {self.limit} tokens; {fix}"


def recipe(lm, normalize: bool | None = None) -> Recipe:
    """The model's recipe for its vectors (``normalize``, when given, overrides its own choice).

    Raises:
        InputError: the model's sentence-transformers config asks for a step gptcli does not run.
    """
    from gptcli.models.sentence import sentence_config

    config = sentence_config(lm.source)
    if config is None:
        # Mean over real tokens and unit length: what classify and /v1/embeddings always gave, and
        # what most encoders' model cards do by hand.
        return Recipe(("mean",), True if normalize is None else normalize, _limit(lm, None))
    return Recipe(config.pooling, config.normalize if normalize is None else normalize,
                  _limit(lm, config.max_tokens), config.prompt, config.lowercase, from_config=True)


def _limit(lm, configured: int | None) -> int | None:
    """The smallest of the model's context, its tokenizer's limit and the sentence-transformers
    max_seq_length: a RoBERTa's 514 positions hold 512 tokens, MiniLM was set up for 256 of its 512."""
    tokenizer_limit = getattr(lm.tokenizer, "model_max_length", None)
    if not isinstance(tokenizer_limit, int) or not 0 < tokenizer_limit < 10_000_000:
        tokenizer_limit = None
    limits = [value for value in (lm.context_length, tokenizer_limit, configured) if value]
    return min(limits) if limits else None


def embed(lm, texts: Sequence[str], params: EmbedParams = EmbedParams()):
    """Every text's vector at once: a float32 tensor (rows in input order) and the token counts.

    Raises:
        TextTooLong: a text longer than the model's limit (unless ``params.truncate``).
        UsageError: a batch size below 1.
    """
    import torch

    windows = list(embedding_windows(lm, texts, params))
    if not windows:
        return torch.empty(0, 0), []
    return torch.cat([vectors for vectors, _ in windows]), [n for _, lengths in windows for n in lengths]


def embedding_windows(lm, texts: Sequence[str], params: EmbedParams,
                      stats: EmbedStats | None = None) -> Iterator[tuple[object, list[int]]]:
    """The texts' vectors a window at a time: (float32 tensor on the CPU, token counts), in input order.

    All texts are counted first: a text that is too long stops the run before any is embedded.

    Raises:
        TextTooLong, UsageError: as ``embed``.
    """
    if params.batch_size < 1:
        raise UsageError(f"the batch size must be at least 1, got {params.batch_size}")
    made = recipe(lm, params.normalize)
    if params.full_context:
        made = replace(made, max_tokens=_limit(lm, None))
    if stats is not None:
        stats.recipe = made
    prepared = [_prepared(text, made) for text in texts]
    lengths = counted(lm, prepared, made.max_tokens, params.truncate, stats)
    for start in range(0, len(prepared), SORT_WINDOW):
        stop = min(start + SORT_WINDOW, len(prepared))
        vectors = _window(lm, made, prepared, lengths, range(start, stop), params)
        if stats is not None:  # before the yield: a consumer that has all it needs never resumes us
            stats.texts += stop - start
            stats.tokens += sum(lengths[start:stop])
        yield vectors, lengths[start:stop]


def embedding_results(lm, texts: Sequence[str], params: EmbedParams, stats: EmbedStats) -> Iterator:
    """Each text's ItemResult as `gptcli embed` writes it (field embedding: a list of floats), in input
    order; the first one carries the warning about texts cut to the limit, before any is written.

    Raises:
        TextTooLong, UsageError: as ``embed``.
    """
    from gptcli.services.records import ItemResult

    first = True
    for vectors, _lengths in embedding_windows(lm, texts, params, stats):
        for vector in vectors:
            warnings = [_cut_note(stats, len(texts))] if first and stats.truncated else []
            first = False
            yield ItemResult({"embedding": vector.tolist()}, warnings)


def _cut_note(stats: EmbedStats, texts: int) -> str:
    limit = stats.recipe.max_tokens
    return (f"{stats.truncated} of {texts} texts were longer than the embedding model's limit of {limit} tokens "
            f"and were cut to it (their ends are not in their vectors)")


def _prepared(text: str, made: Recipe) -> str:
    text = made.prompt + text
    return text.lower() if made.lowercase else text  # do_lower_case: sentence-transformers lower-cases all of it


def counted(lm, texts: Sequence[str], limit: int | None, truncate: bool, stats: EmbedStats | None = None) -> list[int]:
    """Each text's length in tokens (special tokens included), after cutting when ``truncate``.

    Raises:
        TextTooLong: the first text longer than ``limit``, unless ``truncate``.
    """
    from gptcli.services.prompting import MAX_CHARS_PER_TOKEN

    if limit is not None and not truncate:
        for index, text in enumerate(texts):  # a text that cannot fit is refused before a slow tokenization of it
            if len(text) > limit * MAX_CHARS_PER_TOKEN:
                raise TextTooLong(text, index, None, limit)
    lengths: list[int] = []
    for start in range(0, len(texts), COUNT_CHUNK):
        chunk = list(texts[start:start + COUNT_CHUNK])
        ids = lm.tokenizer(chunk, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        lengths.extend(len(row) for row in ids)
    if limit is None:
        return lengths
    cut = 0
    for index, length in enumerate(lengths):
        if length > limit:
            if not truncate:
                raise TextTooLong(texts[index], index, length, limit)
            lengths[index], cut = limit, cut + 1
    if stats is not None:
        stats.truncated += cut
    return lengths


def _window(lm, made: Recipe, texts: list[str], lengths: list[int], window: range, params: EmbedParams):
    """One window's vectors in input order; its texts run longest first, ``batch_size`` at a time."""
    import torch

    from gptcli.engine.encoders import EncoderEngine
    from gptcli.services.pooling import pool

    engine = EncoderEngine(lm)
    order = sorted(window, key=lengths.__getitem__, reverse=True)
    rows = [None] * len(window)
    for first in range(0, len(order), params.batch_size):
        batch_rows = order[first:first + params.batch_size]
        batch = _tokenized(lm, [texts[i] for i in batch_rows], made.max_tokens, params.truncate)
        vectors = pool(engine.token_states(batch), batch["attention_mask"], made.pooling)
        if made.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        for row, vector in zip(batch_rows, vectors.cpu()):
            rows[row - window.start] = vector
    return torch.stack(rows)


def _tokenized(lm, texts: list[str], limit: int | None, truncate: bool):
    cut = {"truncation": True, "max_length": limit} if truncate and limit else {"truncation": False}
    return lm.tokenizer(texts, padding=True, return_tensors="pt", verbose=False, **cut).to(lm.device)


def auto_batch_size(lm) -> int:
    """The batch size when the user leaves it to gptcli: 32 texts on CPUs (measured), 128 on GPUs."""
    return GPU_BATCH_SIZE if str(lm.device).startswith("cuda") else DEFAULT_BATCH_SIZE

