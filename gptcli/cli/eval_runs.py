"""`gptcli eval`: each task run as its own command runs it, its results kept for scoring."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from gptcli.cli import classify as classify_cli
from gptcli.cli import common
from gptcli.cli.sink import ResultSink


class KeepingSink(ResultSink):
    """The results of a run kept for scoring, and written only to --output (stdout is for the scores)."""

    def __init__(self, output: str | None, run, overwrite: bool):
        super().__init__(output, False, run, overwrite=overwrite)
        self.output = output
        self.earlier = bool(self.file is not None and self.file.done)  # resumed: some results are in the file
        self.records: dict = {}

    def emit(self, record: dict, text: str) -> None:
        self.records[record["id"]] = record
        if self.file is not None:
            super().emit(record, text)

    def every_record(self) -> dict:
        """By id: the results of this run, and those an earlier run of it left in --output."""
        if not self.earlier:
            return self.records
        from gptcli.outputs import read_results

        return {**{record["id"]: record for _where, record in read_results(self.output)}, **self.records}


def scoring(run_class):
    """``run_class`` (a task's TaskRun) as eval runs it: under its own command name, its results kept."""

    class Scoring(run_class):
        command = f"eval {run_class.command.removeprefix('eval ')}"

        def open_sink(self, run):
            self.kept = KeepingSink(self.output, run, self.overwrite)
            return self.kept

    return Scoring


def results(run, items: list, load_options) -> dict:
    run.execute(items, load_options)
    return run.kept.every_record()


def predict(run, cases: list, load_options, field: str) -> list[str]:
    """The prediction in ``field`` of each case's item, in the order of ``cases``."""
    found = results(run, [case.item for case in cases], load_options)
    return [found[case.item.id][field] or "" for case in cases]


class ClassifyRun(classify_cli.Run):
    """classify's run; without --labels, a classifier with labels of its own uses them (not those of --data)."""

    own_labels_allowed = False

    def work(self, lm, items, sink, clock) -> None:
        from gptcli.models import kinds
        from gptcli.services.classify_encoders import is_nli

        if self.own_labels_allowed and lm.kind == kinds.SEQUENCE_CLASSIFIER and not is_nli(lm.model.config):
            self.params = replace(self.params, labels=())
        super().work(lm, items, sink, clock)


@dataclass
class Text:
    """One text whose loss is measured, with the fields carried to its result; ``row``: a record in
    one of finetune's formats (prompt/completion, instruction, messages), scored as training learns it."""

    id: object
    text: str
    where: str
    fields: dict
    row: object = None

    def tokens(self, tokenizer):
        from gptcli.finetune import evaluate
        from gptcli.services.perplexity import text_tokens

        return text_tokens(tokenizer, self.text) if self.row is None else evaluate.scored_tokens(self.row, tokenizer)

    def carried(self) -> dict:
        """The fields its result keeps: all but the id and the text it was scored on."""
        inputs = ("text",) if self.row is None else ("text", *_format_fields(self.row))
        return {name: value for name, value in self.fields.items() if name != "id" and name not in inputs}


def text_of(record) -> Text:
    """A --data record to score: its text, or a record in one of finetune's formats (checked as finetune checks it)."""
    from gptcli.finetune import data as fmt

    if "text" in record.fields or fmt.detect_format(record.fields) is None:
        return Text(record.id, record.text("text"), record.where, record.fields)
    return Text(record.id, "", record.where, record.fields, fmt.row_of(record.where, record.fields))


def _format_fields(row) -> tuple[str, ...]:
    from gptcli.finetune.evaluate import FIELDS

    return FIELDS[row.format]


class PerplexityRun(common.TaskRun):
    """perplexity: the mean token loss of each text."""

    command = "eval perplexity"
    unit = "text"
    RESULT_FIELDS = ("loss", "tokens", "windows")

    def accepts(self) -> tuple[str, ...]:
        from gptcli.models.kinds import CAUSAL_LM

        return (CAUSAL_LM,)

    def work(self, lm, items: list, sink, clock) -> None:
        from gptcli import console
        from gptcli.services.perplexity import sequence_losses, window_size

        params = common.with_auto_batch_size(self.params, lm, self.auto_batch, window_size(lm, self.params))
        started = time.perf_counter()
        tokens = 0
        with console.Progress("scoring", len(items)) as progress:
            sequences = [item.tokens(lm.tokenizer) for item in items]
            for item, result in zip(items, sequence_losses(lm, sequences, params)):
                sink.emit({"id": item.id, **item.carried(), "loss": result.loss, "tokens": result.tokens,
                           "windows": result.windows}, "")
                tokens += result.tokens
                progress.advance()
        if self.show_stats:
            seconds = time.perf_counter() - started
            console.info(common.stats_line(lm, clock, f"{len(items)} texts, {tokens} tok scored in {seconds:.2f} s"))


def corpus_loss(items: list[Text], scored: dict, data: str) -> tuple[float, int]:
    """The mean loss over every scored token of ``items`` and their count; a text with none is warned of.

    Raises:
        InputError: no text has a token to score.
    """
    from gptcli import console
    from gptcli.errors import InputError
    from gptcli.services import metrics

    for item in items:
        if not scored[item.id]["tokens"]:
            console.warn(f"{item.where}: {'fewer than two tokens' if item.row is None else 'no completion token'}, "
                         f"nothing to score; left out")
    losses = [scored[item.id]["loss"] or 0.0 for item in items]
    tokens = [scored[item.id]["tokens"] for item in items]
    if not sum(tokens):
        raise InputError(f"{data}: no text has a token to score (each needs two tokens or more)")
    return metrics.mean_loss(losses, tokens), sum(tokens)
