"""`gptcli summarize`: one summary per document, of any length."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Optional

import typer

from gptcli.cli import common
from gptcli.cli import options as opt
from gptcli.errors import InputError

SUMMARY_PANEL = "Summary"


class Length(str, Enum):
    short = "short"
    medium = "medium"
    long = "long"


class Overflow(str, Enum):
    chunk = "chunk"
    truncate = "truncate"
    error = "error"


@dataclass
class Item:
    """One document, with the fields carried into its output record."""

    id: object
    text: str
    where: str
    fields: dict


def summarize(
    text: Annotated[Optional[str], typer.Argument(
        help="The document. Without it (or with -), all of stdin is one document.", show_default=False)] = None,
    length: Annotated[Length, typer.Option(
        rich_help_panel=SUMMARY_PANEL, help="short (a sentence), medium (2-3 sentences) or long (a paragraph).")]
        = Length.medium,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        rich_help_panel=SUMMARY_PANEL, help="Most tokens in a summary; overrides the budget of --length.",
        show_default=False)] = None,
    overflow: Annotated[Overflow, typer.Option(
        rich_help_panel=SUMMARY_PANEL,
        help="A document longer than the model can read: chunk (summarize its parts, then their summaries), "
             "truncate (keep its beginning, with a warning) or error.")] = Overflow.chunk,
    max_input_tokens: Annotated[Optional[int], typer.Option(
        rich_help_panel=SUMMARY_PANEL,
        help="Read at most this many document tokens per call (smaller models summarize shorter parts better); "
             "default: what the context allows.", show_default=False)] = None,
    model: opt.Model = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    trust_remote_code: opt.TrustRemoteCode = False,
    allow_pickle: opt.AllowPickle = False,
    input_file: Annotated[Optional[str], typer.Option(
        "--input", "-i", rich_help_panel=opt.INPUT_PANEL,
        help="Many documents: .jsonl records with a text field (other fields are carried), or .txt with "
             "one document per line.")] = None,
    json_output: opt.JsonOutput = False,
    output: opt.OutputFile = None,
    batch_size: opt.BatchSize = 0,
    stats: opt.Stats = False,
    overwrite: opt.Overwrite = False,
    verbose: opt.Verbose = False,
) -> None:
    """Summarize a document, stdin, or a batch file: one summary per document.

    Long documents are never cut silently: they are summarized in parts, then the parts' summaries.

    Examples:

      gptcli summarize "$(cat article.txt)" --length short

      curl -s https://example.com/report.txt | gptcli summarize --max-new-tokens 200

      gptcli summarize --input articles.jsonl --output summaries.jsonl --model facebook/bart-large-cnn
    """
    from gptcli.services.summarize import SummarizeParams

    params = SummarizeParams(length.value, max_new_tokens, overflow.value, batch_size or 1, max_input_tokens)
    params.validate()
    common.check_batch_args(text, input_file, output)
    items = _read_items(text, input_file)
    settings = common.run_settings(output, model, dtype=dtype, length=length, max_new_tokens=max_new_tokens,
                                   overflow=overflow, max_input_tokens=max_input_tokens)
    Run(params, batch_size == 0, json_output, output, stats, settings, overwrite,
         batch_input=input_file is not None).execute(
        items, _load_options(model, device, dtype, trust_remote_code, allow_pickle))


def _load_options(model, device, dtype, trust_remote_code, allow_pickle):
    from gptcli.models.loader import LoadOptions

    return LoadOptions(model, device, dtype, trust_remote_code, allow_pickle=allow_pickle)


def _read_items(text: str | None, input_file: str | None) -> list[Item]:
    from gptcli import textio

    if input_file is not None:
        records = textio.read_records(input_file, "text")
        items = [Item(r.id, r.text("text"), r.where, r.fields) for r in records]  # a missing text is named first
        common.refuse_result_fields(records, RESULT_FIELDS, "summarize")
        return items
    if text is not None and text != "-":  # the argument is the document; stdin is not read
        if not text.strip():
            raise InputError("the document to summarize is empty")
        return [Item(1, textio.check_argument(text, "the document"), "the document", {})]
    document = common.single_text("-" if text == "-" or textio.stdin_is_piped() else None, "document")
    return [Item(1, document, "stdin", {})]


@dataclass
class Run(common.TaskRun):
    """summarize: one summary per document (newlines folded when there are many)."""

    batch_input: bool = False

    command = "summarize"
    unit = "document"

    def accepts(self) -> tuple[str, ...]:
        from gptcli.models.kinds import CAUSAL_LM, SEQ2SEQ

        return (CAUSAL_LM, SEQ2SEQ)

    def work(self, lm, items: list[Item], sink, clock) -> None:
        from gptcli import console
        from gptcli.services.summarize import Summarizer

        params = common.with_auto_batch_size(self.params, lm, self.auto_batch, 2048)
        summarizer = Summarizer(lm, params, trace=_verbose_trace)
        started = time.perf_counter()
        with console.Progress("summarizing", len(items)) as progress:
            for item, summary in zip(items, summarizer.summarize((i.text, i.where) for i in items)):
                _warn(item, summary, summarizer)
                text = " ".join(summary.text.split()) if self.batch_input else summary.text
                sink.emit(_record(item, summary), text)
                progress.advance()
        if self.show_stats:
            _report_stats(lm, summarizer.stats, time.perf_counter() - started, clock, len(items))


def _verbose_trace(call) -> None:
    from gptcli import console

    console.log(f"document {call.document + 1}: {call.stage} (level {call.level}) read {len(call.text)} chars, "
                f"wrote {len(call.output)}")


def _warn(item: Item, summary, summarizer) -> None:
    from gptcli import console

    if summary.truncated:
        console.warn(f"{item.where}: cut from {summary.input_tokens} to {summarizer.final_budget} tokens "
                     f"(--overflow truncate); the rest was not read")
    elif summary.levels:
        console.log(f"{item.where}: {summary.input_tokens} tokens, summarized in {summary.chunks} parts "
                    f"over {summary.levels} level(s)")
    if summary.finish_reason == "length":  # a result cut by a token limit says so
        console.warn(f"{item.where}: the summary stopped at its limit of {summarizer.final_tokens} tokens "
                     f"before it ended; {summarizer.length_hint()}")


RESULT_FIELDS = ("summary", "input_tokens", "chunks", "levels", "truncated", "generated_tokens", "finish_reason")


def _record(item: Item, summary) -> dict:
    record = {"id": item.id}
    # The document itself is left out: the output stays small, and the id leads back to it.
    record.update({k: v for k, v in item.fields.items() if k not in ("id", "text")})
    record.update(summary=summary.text, input_tokens=summary.input_tokens, chunks=summary.chunks,
                  levels=summary.levels, truncated=summary.truncated, generated_tokens=summary.generated_tokens,
                  finish_reason=summary.finish_reason)
    return record


def _report_stats(lm, stats, seconds: float, clock, documents: int) -> None:
    from gptcli import console

    speed = stats.generated_tokens / stats.seconds if stats.seconds else 0.0
    console.info(common.stats_line(lm, clock, f"{documents} documents, {stats.calls} model calls · read "
                                              f"{stats.input_tokens} tok · wrote {stats.generated_tokens} tok "
                                              f"({speed:.1f} tok/s) · {seconds:.2f} s"))
