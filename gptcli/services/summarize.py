"""Summaries of documents of any length: map-reduce over chunks, never a silent cut.

A document that fits what the model can read (its context, less the instruction
and the room for the summary) is summarized in one call. A longer one, by
default, is split on paragraph/sentence boundaries into chunks that fit; each
chunk is summarized (all chunks of all documents in a window batched together),
the partial summaries are joined, and the result is summarized again, level by
level, until it fits. ``overflow="truncate"`` keeps the head instead (reported on
the result), ``overflow="error"`` stops with the numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator

from gptcli.errors import GptcliError, InputError, UsageError
from gptcli.services import chunking, textclean
from gptcli.services.records import ItemResult
from gptcli.services.text2text import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Output, Request, Runner, RunStats

LENGTHS = {  # wording for an instruction-following model, the token budget, and the most sentences kept
    "short": ("in one sentence", 60, 1),
    "medium": ("in two or three sentences", 120, 3),
    "long": ("in one paragraph of about five sentences", 250, 6),
}
# Decoding for causal LMs (measured on the train splits: docs/summarize-translate-decoding.md). A summary is
# one paragraph: a blank line ends it (what follows is a second answer, a note, or "Summary:" again).
STOP = ("\n\n",)
REPETITION_PENALTY = 1.0
NO_REPEAT_NGRAM = 0
OVERFLOWS = ("chunk", "truncate", "error")
MAX_LEVELS = 8
DEFAULT_INPUT_LIMIT = 1024  # for models whose config states no context (T5's relative positions)
MIN_CHUNK_TOKENS = 32
# The instruction comes after the text: small instruct models (SmolLM2) follow it there, and
# copy the text's opening sentences when it comes first.
MAP_INSTRUCTION = ("{text}\n\nThe text above is one part of a longer document. Summarize it in two or three "
                   "sentences, keeping names, numbers and key facts.")
FINAL_INSTRUCTION = "{text}\n\nSummarize the text above {wording}. Reply with the summary only."


@dataclass(frozen=True)
class SummarizeParams:
    length: str = "medium"
    max_new_tokens: int | None = None  # overrides the length's token budget
    overflow: str = "chunk"
    batch_size: int = 8
    max_input_tokens: int | None = None  # read at most this many document tokens per call
    max_batch_tokens: int | None = None  # see GenerationParams
    # Causal LMs: OpenAI-style penalties on the tokens generated so far (not the document); see SamplingParams
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def validate(self) -> None:
        _sampling(self).validate()
        if self.length not in LENGTHS:
            raise UsageError(f"--length must be one of {', '.join(LENGTHS)}, got {self.length!r}")
        if self.overflow not in OVERFLOWS:
            raise UsageError(f"--overflow must be one of {', '.join(OVERFLOWS)}, got {self.overflow!r}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.max_input_tokens is not None and self.max_input_tokens < MIN_CHUNK_TOKENS:
            raise UsageError(f"--max-input-tokens must be at least {MIN_CHUNK_TOKENS}, got {self.max_input_tokens}")

    @property
    def row_tokens(self) -> int:
        """The tokens one batch row is sized for when the batch size is chosen from free memory."""
        return 2048

    @property
    def final_tokens(self) -> int:
        return self.max_new_tokens or LENGTHS[self.length][1]

    @property
    def map_tokens(self) -> int:
        # Partial summaries keep more detail than a short final one, so the final step has facts to choose from.
        return max(LENGTHS["medium"][1] if self.max_new_tokens is None else 0, self.final_tokens)


@dataclass
class Summary:
    """The summary of document ``index``; ``chunks`` > 1 and ``levels`` > 0 when map-reduce ran."""

    index: int
    text: str
    input_tokens: int
    chunks: int = 1
    levels: int = 0
    truncated: bool = False
    generated_tokens: int = 0
    # "length": the final call stopped at its token budget (the summary may be cut); "stop": gptcli ended
    # it at a sentence end (the sentence count of --length, or a repetition loop cut); "eos": the model did
    finish_reason: str = FINISH_EOS

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Call:
    """One text sent to the model, for tracing: document, stage (map/final), level, text in and out."""

    document: int
    stage: str
    level: int
    text: str
    output: str


@dataclass
class _Doc:
    index: int
    where: str
    text: str
    input_tokens: int = 0
    chunks: int = 1
    levels: int = 0
    truncated: bool = False
    generated: int = 0
    summary: str | None = None
    finish_reason: str = FINISH_EOS


@dataclass
class Summarizer:
    """A loaded model and the settings: call ``summarize`` with documents."""

    lm: object
    params: SummarizeParams
    stats: RunStats = field(default_factory=RunStats)
    trace: Callable[[Call], None] | None = None

    def __post_init__(self) -> None:
        self.params.validate()
        self._runner = Runner(self.lm, self.params.batch_size, stats=self.stats, stop=STOP,
                              max_batch_tokens=self.params.max_batch_tokens, sampling=_sampling(self.params))
        self._counter = chunking.TokenCounter(self.lm.tokenizer)
        self.final_tokens = self._final_tokens()
        self.final_budget = self._budget("final", self.final_tokens)
        self.map_budget = self._budget("map", self.params.map_tokens)
        # A partial summary must be well shorter than its chunk, or the levels never converge.
        self.map_new_tokens = min(self.params.map_tokens, max(MIN_CHUNK_TOKENS // 2, self.map_budget // 2))
        if self._runner.output_limit is not None:
            self.map_new_tokens = min(self.map_new_tokens, self._runner.output_limit)

    def _final_tokens(self) -> int:
        """The summary's token budget, within what the model can write in one call.

        Raises:
            UsageError: --max-new-tokens asks more than an encoder-decoder's decoder can write.
        """
        limit = self._runner.output_limit
        if limit is None or self.params.final_tokens <= limit:
            return self.params.final_tokens
        if self.params.max_new_tokens is not None:
            raise UsageError(f"--max-new-tokens {self.params.max_new_tokens} is more than {self.lm.name} can write "
                             f"in one summary (its decoder has {limit} positions); use --max-new-tokens {limit} "
                             f"or less")
        # A --length budget is a target, not a promise: the summary gets what the decoder allows,
        # and says "length" if it stops there.
        return limit

    def length_hint(self) -> str:
        """What to do about a summary that stopped at its token limit."""
        if self.final_tokens < self.params.final_tokens:
            return f"that is all {self.lm.name}'s decoder can write; use --length short or a model with a longer one"
        return "raise --max-new-tokens for a longer summary"

    def summarize(self, documents: Iterable[tuple[str, str]]) -> Iterator[Summary]:
        """Summaries of (text, where) documents, in order, a window of ``batch_size`` at a time.

        Raises:
            InputError: a document is too long and overflow is "error".
            GptcliError: partial summaries stop getting shorter (the model writes too much).
        """
        window: list[_Doc] = []
        for index, (text, where) in enumerate(documents):
            window.append(_Doc(index, where, text))
            if len(window) >= self.params.batch_size:
                yield from self._finish(window)
                window = []
        if window:
            yield from self._finish(window)

    def _finish(self, docs: list[_Doc]) -> Iterator[Summary]:
        for doc in docs:
            doc.input_tokens = self._counter.count(doc.text)
            self._apply_overflow(doc)
        pending = list(docs)
        while pending:
            pending = self._round(pending)
        for doc in docs:
            yield Summary(doc.index, doc.summary or "", doc.input_tokens, doc.chunks, doc.levels,
                          doc.truncated, doc.generated, doc.finish_reason)

    def _apply_overflow(self, doc: _Doc) -> None:
        if doc.input_tokens <= self.final_budget or self.params.overflow == "chunk":
            return
        if self.params.overflow == "error":
            raise InputError(f"{doc.where} is {doc.input_tokens} tokens; {self.lm.name} can summarize "
                             f"{self.final_budget} at once ({self._budget_text()}); use --overflow chunk "
                             f"to summarize it in parts, or --overflow truncate to keep its beginning")
        doc.text = self._counter.cut(doc.text, self.final_budget)[0]
        doc.truncated = True

    def _round(self, pending: list[_Doc]) -> list[_Doc]:
        """One batched step for every pending document: its final call, or a map over its chunks."""
        plan: list[tuple[_Doc, str, list[str]]] = []
        for doc in pending:
            if not doc.text.strip():  # every partial summary came back empty: nothing left to read
                doc.summary = ""
            elif self._counter.count(doc.text) <= self.final_budget:
                plan.append((doc, "final", [doc.text]))
            else:
                plan.append((doc, "map", chunking.split_to_fit(doc.text, self.map_budget, self._counter)))
        requests = [self._request(stage, piece) for _doc, stage, pieces in plan for piece in pieces]
        outputs = iter(self._runner.run(requests))
        still: list[_Doc] = []
        for doc, stage, pieces in plan:
            done = [self._clean(stage, piece, next(outputs)) for piece in pieces]
            doc.generated += sum(o.generated_tokens for o in done)
            self._record(doc, stage, pieces, done)
            if stage == "final":
                doc.summary, doc.finish_reason = done[0].text, done[0].finish_reason
            else:
                self._reduce(doc, pieces, done)
                still.append(doc)
        return still

    def _reduce(self, doc: _Doc, pieces: list[str], outputs: list) -> None:
        before = self._counter.count(doc.text)
        doc.text = "\n\n".join(o.text for o in outputs if o.text)
        doc.chunks = len(pieces) if doc.levels == 0 else doc.chunks
        doc.levels += 1
        after = self._counter.count(doc.text)
        if after >= before or doc.levels > MAX_LEVELS:
            raise GptcliError(f"{doc.where}: the summaries of its parts are not getting shorter ({before} → "
                              f"{after} tokens); lower --max-new-tokens or use --length short")

    def _record(self, doc: _Doc, stage: str, pieces: list[str], outputs: list) -> None:
        if self.trace is not None:
            for piece, output in zip(pieces, outputs):
                self.trace(Call(doc.index, stage, doc.levels, piece, output.text))

    def _clean(self, stage: str, piece: str, output: Output) -> Output:
        """A causal LM's summary without its artefacts and loops, at most the length's sentences, and never
        ending mid-sentence unless it is all the model wrote before its budget ("length", warned).

        finish_reason "stop": gptcli ended it at a sentence end (the sentence count of --length was
        reached, or a repetition loop was cut).
        """
        if not self._runner.is_causal:
            return output
        text = textclean.strip_artefacts(output.text, self._wrap(stage, ""))
        text, looped = textclean.cut_repetition(text)
        limit = LENGTHS[self.params.length][2] if stage == "final" and self.params.max_new_tokens is None else 0
        capped = False
        if limit:
            text, capped = textclean.first_sentences(text, limit)
        reason = FINISH_STOP if looped or capped else output.finish_reason
        if reason == FINISH_LENGTH:
            text = textclean.drop_unfinished(text)  # still "length": the model had more to say
        return Output(text, output.input_tokens, output.generated_tokens, reason)

    def _request(self, stage: str, text: str) -> Request:
        tokens = self.final_tokens if stage == "final" else self.map_new_tokens
        return Request(self._wrap(stage, text), tokens)

    def _wrap(self, stage: str, text: str) -> str:
        if not self._runner.is_causal:
            return _seq2seq_prefix(self.lm) + text
        if stage == "map":
            return MAP_INSTRUCTION.format(text=text)
        return FINAL_INSTRUCTION.format(wording=LENGTHS[self.params.length][0], text=text)

    def _budget(self, stage: str, new_tokens: int) -> int:
        """Document tokens one call can take: the context less the wrapper and (causal) the output."""
        context = self.lm.context_length or DEFAULT_INPUT_LIMIT
        overhead = len(self._runner.encode(self._wrap(stage, "")))
        budget = context - overhead - (new_tokens if self._runner.is_causal else 0)
        if self.params.max_input_tokens is not None:
            budget = min(budget, self.params.max_input_tokens)
        if budget < MIN_CHUNK_TOKENS:
            raise UsageError(f"{self.lm.name} has a context of {context} tokens: after {overhead} for the "
                             f"instruction and {new_tokens} for the summary, too little is left to read "
                             f"({budget}); lower --max-new-tokens or use a model with a longer context")
        return budget

    def _budget_text(self) -> str:
        context = self.lm.context_length or DEFAULT_INPUT_LIMIT
        if self.params.max_input_tokens is not None and self.final_budget == self.params.max_input_tokens:
            return f"--max-input-tokens {self.params.max_input_tokens}"
        return f"a context of {context} less the instruction and the summary"


RESULT_FIELDS = ("summary", "input_tokens", "chunks", "levels", "truncated", "generated_tokens", "finish_reason")


def summary_results(lm, params: SummarizeParams, documents: list[tuple[str, str]], stats: RunStats | None = None,
                    trace: Callable[[Call], None] | None = None) -> Iterator[ItemResult]:
    """Each document's result as `gptcli summarize` writes it, locally and through a server.

    Args:
        lm: a LoadedModel (causal LM or encoder-decoder).
        params: the options, with the batch size already chosen.
        documents: (text, where) pairs; ``where`` names the document in warnings.
        stats: filled in as calls finish, when given.
        trace: called with every model call (--verbose).

    Returns:
        An iterator of ItemResults in input order: the RESULT_FIELDS of the record, and the
        warnings (a cut document, a summary stopped at its limit) and logs (map-reduce) about it.

    Raises:
        UsageError, InputError, GptcliError: as ``Summarizer`` and ``Summarizer.summarize``.
    """
    summarizer = Summarizer(lm, params, stats if stats is not None else RunStats(), trace)
    for (_text, where), summary in zip(documents, summarizer.summarize(documents)):
        result = ItemResult(dict(zip(RESULT_FIELDS, (summary.text, summary.input_tokens, summary.chunks,
                                                     summary.levels, summary.truncated, summary.generated_tokens,
                                                     summary.finish_reason))))
        if summary.truncated:
            result.warnings.append(f"{where}: cut from {summary.input_tokens} to {summarizer.final_budget} tokens "
                                   f"(--overflow truncate); the rest was not read")
        elif summary.levels:
            result.logs.append(f"{where}: {summary.input_tokens} tokens, summarized in {summary.chunks} parts "
                               f"over {summary.levels} level(s)")
        if summary.finish_reason == FINISH_LENGTH:  # a result cut by a token limit says so
            result.warnings.append(f"{where}: the summary stopped at its limit of {summarizer.final_tokens} "
                                   f"tokens before it ended; {summarizer.length_hint()}")
        yield result


def _sampling(params: SummarizeParams):
    from gptcli.engine.sampling import SamplingParams

    return SamplingParams(repetition_penalty=REPETITION_PENALTY, no_repeat_ngram_size=NO_REPEAT_NGRAM,
                          presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty)


def _seq2seq_prefix(lm) -> str:
    """The model's own summarization prefix (T5: "summarize: "), from its config when it states one."""
    tasks = getattr(lm.model.config, "task_specific_params", None) or {}
    prefix = (tasks.get("summarization") or {}).get("prefix")
    if prefix is not None:
        return prefix
    return "summarize: " if getattr(lm.model.config, "model_type", "") in ("t5", "mt5", "umt5") else ""
