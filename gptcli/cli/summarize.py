"""`gptcli summarize`: one summary per document, of any length."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Optional

import typer

from gptcli.cli import common, spread
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
    server: opt.Server = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    engine: opt.EngineOpt = "transformers",
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
    num_processes: opt.NumProcesses = 1,
    verbose: opt.Verbose = False,
) -> None:
    """Summarize a document, stdin, or a batch file: one summary per document.

    Long documents are never cut silently: they are summarized in parts, then the parts' summaries.

    Examples:

      gptcli summarize "$(cat article.txt)" --length short

      curl -s https://example.com/report.txt | gptcli summarize --max-new-tokens 200

      gptcli summarize --input articles.jsonl --output summaries.jsonl --model facebook/bart-large-cnn

      gptcli summarize --server http://127.0.0.1:8000 --input articles.jsonl    # through a running `gptcli serve`
    """
    from gptcli.services.summarize import SummarizeParams

    params = SummarizeParams(length.value, max_new_tokens, overflow.value, batch_size or 1, max_input_tokens)
    params.validate()
    common.check_engine(engine)
    if server:
        common.check_server_args(device=device, dtype=dtype, engine=engine, trust_remote_code=trust_remote_code,
                                 allow_pickle=allow_pickle)
    spread.check_options(num_processes, output, server, text, input_file)
    common.check_batch_args(text, input_file, output)
    items = _read_items(text, input_file)
    settings = common.run_settings(output, model, None, server, "summarize", dtype=dtype, length=length,
                                   max_new_tokens=max_new_tokens, overflow=overflow, max_input_tokens=max_input_tokens,
                                   **common.engine_setting(engine))
    Run(params, batch_size == 0, json_output, output, stats, settings, overwrite, server, model,
        batch_input=input_file is not None, processes=num_processes).execute(
        items, _load_options(model, device, dtype, trust_remote_code, allow_pickle, engine))


def _load_options(model, device, dtype, trust_remote_code, allow_pickle, engine="transformers"):
    from gptcli.models.loader import LoadOptions

    return LoadOptions(model, device, dtype, trust_remote_code, allow_pickle=allow_pickle, engine=engine)


def _read_items(text: str | None, input_file: str | None) -> list[Item]:
    from gptcli import textio
    from gptcli.services.summarize import RESULT_FIELDS

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
        from dataclasses import asdict

        from gptcli import console
        from gptcli.services.summarize import summary_results
        from gptcli.services.text2text import RunStats

        params = common.with_auto_batch_size(self.params, lm, self.auto_batch, self.params.row_tokens)
        stats = RunStats()
        started = time.perf_counter()
        documents = [(item.text, item.where) for item in items]
        self._write(items, summary_results(lm, params, documents, stats, _verbose_trace), sink)
        if self.show_stats:
            work = _work_text(asdict(stats), len(items), time.perf_counter() - started)
            console.info(common.stats_line(lm, clock, work))

    def work_remote(self, client, items: list[Item], sink, clock) -> None:
        from dataclasses import asdict

        from gptcli import console
        from gptcli.cli import remote

        parts = remote.parts(items, lambda item: item.text)
        answers = remote.TaskAnswers(client, SUMMARIZE_PATH, [
            {"model": self.model, "params": asdict(self.params), "auto_batch": self.auto_batch,
             "documents": [{"text": item.text, "where": item.where} for item in part]} for part in parts])
        started = time.perf_counter()
        self._write(items, answers, sink)
        if self.show_stats:
            work = _work_text(answers.stats, len(items), time.perf_counter() - started)
            console.info(common.remote_stats_line(client, clock, work))

    def _write(self, items: list[Item], results, sink) -> None:
        def line(fields: dict) -> str:  # many documents: one line each
            return " ".join(fields["summary"].split()) if self.batch_input else fields["summary"]

        common.write_results(items, results, sink, "summarizing", _record, line)


SUMMARIZE_PATH = "/gptcli/v1/summarize"


def _verbose_trace(call) -> None:
    from gptcli import console

    console.log(f"document {call.document + 1}: {call.stage} (level {call.level}) read {len(call.text)} chars, "
                f"wrote {len(call.output)}")


def _record(item: Item, fields: dict) -> dict:
    record = {"id": item.id}
    # The document itself is left out: the output stays small, and the id leads back to it.
    record.update({k: v for k, v in item.fields.items() if k not in ("id", "text")})
    record.update(fields)
    return record


def _work_text(stats: dict, documents: int, seconds: float) -> str:
    """--stats' figures from RunStats' fields (a local run's, or summed over a server's answers)."""
    calls, read, wrote = (stats.get(name, 0) for name in ("calls", "input_tokens", "generated_tokens"))
    speed = wrote / stats["seconds"] if stats.get("seconds") else 0.0
    return (f"{documents} documents, {calls} model calls · read {read} tok · wrote {wrote} tok "
            f"({speed:.1f} tok/s) · {seconds:.2f} s")
