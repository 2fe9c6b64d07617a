"""`gptcli eval`: how well a model does a task on your labelled data.

Each task runs as its own command runs it: the same options (taken from that command's
signature, so their help is the same), the same service, batching and --output records.
The predictions are then scored against the references in --data. --predictions scores
predictions made earlier instead, and loads no model.
"""

from __future__ import annotations

import inspect
import time
import typing
from dataclasses import dataclass, replace
from typing import Annotated, Optional

import typer

from gptcli.cli import classify as classify_cli
from gptcli.cli import common
from gptcli.cli import options as opt
from gptcli.cli import summarize as summarize_cli
from gptcli.cli import translate as translate_cli
from gptcli.cli.sink import ResultSink
from gptcli.errors import InputError, UsageError

EVAL_PANEL = "Evaluation"
EXPECTED = "expected"  # the field each --output record keeps its reference under
PLOT_SUFFIXES = (".png", ".pdf", ".svg")

app = typer.Typer(help="Measure a model on your labelled data: the task runs as its own command runs it, then is "
                       "scored.\n\nThe scores go to stdout as a table (--json: one object); --output keeps every "
                       "record's prediction.", no_args_is_help=True)


def _hints(command) -> dict:
    """A task command's option types by parameter name: eval takes them exactly as the task does."""
    return typing.get_type_hints(command, include_extras=True)


def _defaults(command) -> dict:
    return {name: parameter.default for name, parameter in inspect.signature(command).parameters.items()}


_C, _S, _T = (_hints(command) for command in (classify_cli.classify, summarize_cli.summarize, translate_cli.translate))
_CD, _SD = _defaults(classify_cli.classify), _defaults(summarize_cli.summarize)


def _data(fields: str):
    return Annotated[str, typer.Option(
        "--data", "-d", rich_help_panel=EVAL_PANEL, show_default=False,
        help=f"The labelled records: {fields} in .jsonl, .json (an array) or .csv/.tsv (a header row).")]


def _predictions(task: str, field: str):
    return Annotated[Optional[str], typer.Option(
        rich_help_panel=EVAL_PANEL, show_default=False,
        help=f"Score the predictions in this file (JSON lines with id and {field}, as `gptcli {task} --input DATA "
             f"--output FILE` writes them), joined to --data by id, instead of running a model.")]


JsonReport = Annotated[bool, typer.Option(
    "--json", rich_help_panel=opt.OUTPUT_PANEL, help="Print the scores as one JSON object instead of a table.")]
Output = Annotated[Optional[str], typer.Option(
    "--output", "-o", rich_help_panel=opt.OUTPUT_PANEL, show_default=False,
    help="Keep each record's prediction (and its reference, as expected) in this file as JSON lines, each flushed "
         "when done; rerunning resumes where it stopped.")]
Plot = Annotated[Optional[str], typer.Option(
    rich_help_panel=opt.OUTPUT_PANEL, show_default=False,
    help="Draw the confusion matrix into this .png, .pdf or .svg file (an existing file only with --overwrite).")]


# ---------------------------------------------------------------- the commands


@app.command("classify")
def classify(
    data: _data("text and label"),
    labels: _C["labels"] = None,
    labels_file: _C["labels_file"] = None,
    hypothesis_template: _C["hypothesis_template"] = _CD["hypothesis_template"],
    label_template: _C["label_template"] = None,
    prompt: _C["prompt"] = None,
    predictions: _predictions("classify", "label") = None,
    model: _C["model"] = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    trust_remote_code: opt.TrustRemoteCode = False,
    allow_pickle: opt.AllowPickle = False,
    json_output: JsonReport = False,
    output: Output = None,
    plot: Plot = None,
    batch_size: opt.BatchSize = 0,
    stats: opt.Stats = False,
    overwrite: opt.Overwrite = False,
    verbose: opt.Verbose = False,
) -> None:
    """Score classify on records with a text and its label: accuracy, macro-F1, per-label scores, confusion.

    Per label: precision, recall, F1 and support; the confusion matrix counts each expected label's
    predictions. Without --labels (or a classifier with labels of its own), the labels found in --data.

    Examples:

      gptcli eval classify --data reviews.jsonl --labels positive,negative

      gptcli eval classify --data news.csv --model smollm2 --output predictions.jsonl --plot confusion.png

      gptcli eval classify --data reviews.jsonl --predictions predictions.jsonl --json
    """
    from gptcli.services import metrics

    cases = _read_cases("classify", data, "label", classify_cli.RESULT_FIELDS,
                        lambda r, text: classify_cli.Item(r.id, text, _carried(r, "label")))
    given = classify_cli.read_labels(labels, labels_file)
    chosen = given or _labels_in(cases, data)
    _check_references(cases, chosen, given)
    params = classify_cli.classify_params(chosen, False, None, batch_size, prompt, hypothesis_template,
                                          label_template)
    _check_outputs(predictions, model, output, (data, labels_file, predictions), plot, overwrite)
    if predictions is not None:
        predicted, source = _read_predictions(predictions, "label", cases), {"predictions": predictions}
    else:
        load = classify_cli.classify_load_options(model, device, dtype, trust_remote_code, allow_pickle)
        settings = common.run_settings(output, load.model, dtype=dtype, labels=chosen, prompt=prompt,
                                       hypothesis_template=hypothesis_template, label_template=label_template)
        run = _scoring(_ClassifyRun)(params, batch_size == 0, False, output, stats, settings, overwrite)
        run.own_labels_allowed = not given
        predicted, source = _predict(run, cases, load, "label"), {"model": load.model}
    references = [case.reference for case in cases]
    every = list(chosen) + sorted({*predicted} - set(chosen))  # a classifier's own labels may add some
    report = metrics.classification_report(references, predicted, every)
    _show({"task": "classify", "data": data, **source, **report.to_dict()}, _classify_lines(report), json_output)
    if plot is not None:
        _plot_confusion(report, plot)


@app.command("summarize")
def summarize(
    data: _data("text and summary (the reference)"),
    length: _S["length"] = _SD["length"],
    max_new_tokens: _S["max_new_tokens"] = None,
    overflow: _S["overflow"] = _SD["overflow"],
    max_input_tokens: _S["max_input_tokens"] = None,
    predictions: _predictions("summarize", "summary") = None,
    model: opt.Model = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    trust_remote_code: opt.TrustRemoteCode = False,
    allow_pickle: opt.AllowPickle = False,
    json_output: JsonReport = False,
    output: Output = None,
    batch_size: opt.BatchSize = 0,
    stats: opt.Stats = False,
    overwrite: opt.Overwrite = False,
    verbose: opt.Verbose = False,
) -> None:
    """Score summarize on records with a text and a reference summary: ROUGE-1, ROUGE-2 and ROUGE-L.

    Mean F-measures from the rouge-score package with its Porter stemmer.

    Examples:

      gptcli eval summarize --data articles.jsonl --length short

      gptcli eval summarize --data articles.jsonl --predictions summaries.jsonl --json
    """
    from gptcli.services import metrics
    from gptcli.services.summarize import SummarizeParams

    params = SummarizeParams(length.value, max_new_tokens, overflow.value, batch_size or 1, max_input_tokens)
    params.validate()
    cases = _read_cases("summarize", data, "summary", summarize_cli.RESULT_FIELDS,
                        lambda r, text: summarize_cli.Item(r.id, text, r.where, _carried(r, "summary")))
    _check_outputs(predictions, model, output, (data, predictions))
    if predictions is not None:
        predicted, source = _read_predictions(predictions, "summary", cases), {"predictions": predictions}
    else:
        load = _load_options(model, None, device, dtype, trust_remote_code, allow_pickle)
        settings = common.run_settings(output, model, dtype=dtype, length=length, max_new_tokens=max_new_tokens,
                                       overflow=overflow, max_input_tokens=max_input_tokens)
        run = _scoring(summarize_cli.Run)(params, batch_size == 0, False, output, stats, settings, overwrite)
        predicted, source = _predict(run, cases, load, "summary"), {"model": model}
    scores = metrics.rouge(predicted, [case.reference for case in cases])
    lines = _aligned([["records", str(len(cases))]] + [[_ROUGE_NAMES[name], f"{value:.4f}"]
                                                       for name, value in scores.items()])
    _show({"task": "summarize", "data": data, **source, "count": len(cases), **scores},
          lines + ["(rouge-score F-measure, Porter stemmer)"], json_output)


_ROUGE_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}


@app.command("translate")
def translate(
    data: _data("text and translation (the reference)"),
    to: _T["to"] = None,
    source: _T["source"] = None,
    max_new_tokens: _T["max_new_tokens"] = None,
    predictions: _predictions("translate", "translation") = None,
    model: opt.Model = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    trust_remote_code: opt.TrustRemoteCode = False,
    allow_pickle: opt.AllowPickle = False,
    json_output: JsonReport = False,
    output: Output = None,
    batch_size: opt.BatchSize = 0,
    stats: opt.Stats = False,
    overwrite: opt.Overwrite = False,
    verbose: opt.Verbose = False,
) -> None:
    """Score translate on records with a text and a reference translation: chrF and BLEU.

    Corpus scores from sacrebleu, each with its signature (how to reproduce it); BLEU splits Chinese
    with sacrebleu's zh tokenizer. Read chrF for Japanese and Korean, whose BLEU tokenizers need MeCab.

    Examples:

      gptcli eval translate --data en-de.jsonl --to de --model Helsinki-NLP/opus-mt-en-de

      gptcli eval translate --data en-de.jsonl --to de --predictions translations.jsonl --json
    """
    from gptcli.services import metrics

    params = translate_cli.translate_params(to, source, batch_size, max_new_tokens)
    cases = _read_cases("translate", data, "translation", translate_cli.RESULT_FIELDS,
                        lambda r, text: translate_cli.Item(r.id, text.strip(), _carried(r, "translation")))
    _check_outputs(predictions, model, output, (data, predictions))
    if predictions is not None:
        predicted, origin = _read_predictions(predictions, "translation", cases), {"predictions": predictions}
    else:
        load = _load_options(model, None, device, dtype, trust_remote_code, allow_pickle)
        settings = common.run_settings(output, model, dtype=dtype, to=to, max_new_tokens=max_new_tokens,
                                       **{"from": source})
        run = _scoring(translate_cli.Run)(params, batch_size == 0, False, output, stats, settings, overwrite)
        predicted, origin = _predict(run, cases, load, "translation"), {"model": model}
    references = [case.reference for case in cases]
    chrf, bleu = metrics.chrf(predicted, references), metrics.bleu(predicted, references, metrics.bleu_tokenizer(to))
    lines = _aligned([["records", str(len(cases)), ""], ["chrF", f"{chrf.score:.2f}", chrf.signature],
                      ["BLEU", f"{bleu.score:.2f}", bleu.signature]], left=(0, 2))
    _show({"task": "translate", "data": data, **origin, "count": len(cases), "chrf": chrf.score,
           "chrf_signature": chrf.signature, "bleu": bleu.score, "bleu_signature": bleu.signature}, lines,
          json_output)


@app.command("perplexity")
def perplexity(
    data: _data("text (a .txt file: a text a line)"),
    model: opt.Model = None,
    adapter: opt.Adapter = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    trust_remote_code: opt.TrustRemoteCode = False,
    allow_pickle: opt.AllowPickle = False,
    json_output: JsonReport = False,
    output: Output = None,
    batch_size: opt.BatchSize = 0,
    stats: opt.Stats = False,
    overwrite: opt.Overwrite = False,
    verbose: opt.Verbose = False,
) -> None:
    """Score a causal LM on texts: the mean loss per token, perplexity (its exp) and the tokens scored.

    Every token but a text's first is scored once; a text longer than the context is scored in
    overlapping windows that fit it, never cut. With --adapter: the finetuned model, to compare.

    Examples:

      gptcli eval perplexity --data held-out.txt --model smollm2

      gptcli eval perplexity --data held-out.jsonl --model smollm2 --adapter runs/lora --json
    """
    from gptcli import console, textio
    from gptcli.services import metrics
    from gptcli.services.perplexity import PerplexityParams

    params = PerplexityParams(batch_size or 1)
    records = textio.read_records(data, "text")
    common.refuse_result_fields(records, _Perplexity.RESULT_FIELDS, "eval perplexity")
    items = [_Text(r.id, r.text("text"), r.where, r.fields) for r in records]
    _check_outputs(None, model, output, (data,))
    load = _load_options(model, adapter, device, dtype, trust_remote_code, allow_pickle)
    settings = common.run_settings(output, model, adapter, dtype=dtype)
    run = _scoring(_Perplexity)(params, batch_size == 0, False, output, stats, settings, overwrite)
    scored = _results(run, items, load)
    for item in items:
        if not scored[item.id]["tokens"]:
            console.warn(f"{item.where}: fewer than two tokens, nothing to score; left out")
    losses = [scored[item.id]["loss"] or 0.0 for item in items]
    tokens = [scored[item.id]["tokens"] for item in items]
    if not sum(tokens):
        raise InputError(f"{data}: no text has a token to score (each needs two tokens or more)")
    loss = metrics.mean_loss(losses, tokens)
    lines = _aligned([["texts", str(len(items))], ["tokens", str(sum(tokens))], ["mean loss", f"{loss:.4f}"],
                      ["perplexity", f"{metrics.perplexity(loss):.4f}"]])
    _show({"task": "perplexity", "data": data, "model": model, "adapter": adapter, "count": len(items),
           "tokens": sum(tokens), "mean_loss": loss, "perplexity": metrics.perplexity(loss)}, lines, json_output)


# ---------------------------------------------------------------- reading and checking, before any model loads


@dataclass
class _Case:
    """One --data record: the task's input item, and the reference its prediction is scored against."""

    item: object
    reference: str
    where: str


def _read_cases(task: str, data: str, field: str, result_fields: tuple[str, ...], make_item) -> list[_Case]:
    """Every record of --data, checked: a text, a reference in ``field``, no field the result would replace."""
    from gptcli import textio

    records = textio.read_records(data, "text")
    others = tuple(name for name in result_fields if name != field) + (EXPECTED,)
    common.refuse_result_fields(records, others, f"eval {task}")
    cases = []
    for r in records:
        text, reference = r.text("text"), r.text(field)
        cases.append(_Case(make_item(r, text), reference.strip() if field == "label" else reference, r.where))
    return cases


def _carried(record, field: str) -> dict:
    """The record's fields as its result carries them: the reference under EXPECTED, not under the result's name."""
    fields = {name: value for name, value in record.fields.items() if name != field}
    fields[EXPECTED] = record.fields[field]
    return fields


def _labels_in(cases: list[_Case], data: str) -> tuple[str, ...]:
    found = tuple(sorted({case.reference for case in cases}))
    if len(found) < 2:
        raise UsageError(f"{data} holds one label ({found[0]!r}); give the labels to choose from with "
                         f"--labels a,b or --labels-file FILE")
    return found


def _check_references(cases: list[_Case], chosen: tuple[str, ...], given: tuple[str, ...]) -> None:
    if not given:
        return
    unknown = next((case for case in cases if case.reference not in chosen), None)
    if unknown is not None:
        raise InputError(f"{unknown.where}: label {unknown.reference!r} is not one of the labels given "
                         f"({', '.join(chosen)}); add it, or fix the record")


def _check_outputs(predictions, model, output, inputs: tuple, plot: str | None = None, overwrite: bool = False):
    from gptcli.outputs import check_output_path

    if predictions is not None and model is not None:
        raise UsageError("--predictions scores predictions already made, without a model; drop --model")
    if predictions is not None and output is not None:
        raise UsageError("--predictions already holds the predictions; drop --output")
    if output is not None:
        check_output_path(output, list(inputs))
    if plot is not None:
        _check_plot(plot, overwrite)


def _check_plot(plot: str, overwrite: bool) -> None:
    from pathlib import Path

    path = Path(plot).expanduser()
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"--plot {plot}: give a {', '.join(PLOT_SUFFIXES)} file name, e.g. confusion.png")
    if not path.parent.is_dir():
        raise UsageError(f"--plot {plot}: the folder {path.parent} does not exist; create it first")
    if path.is_dir() or (path.exists() and not overwrite):
        raise UsageError(f"--plot {plot} exists; give another name, or add --overwrite to replace it")


def _read_predictions(predictions: str, field: str, cases: list[_Case]) -> list[str]:
    """The prediction of each case, from a results file joined to --data by id (every id once, no other)."""
    from gptcli.outputs import read_results

    by_id: dict = {}
    wanted = {case.item.id for case in cases}
    for where, record in read_results(predictions):
        if record["id"] not in wanted:
            raise InputError(f"{where}: id {record['id']!r} is not in --data; predictions and --data must hold "
                             f"the same ids")
        if record["id"] in by_id:
            raise InputError(f"{where}: id {record['id']!r} repeats {by_id[record['id']][0]}; ids must be unique")
        if not isinstance(record.get(field), str):
            raise InputError(f"{where}: field {field!r} must be a string, got "
                             f"{'nothing' if record.get(field) is None else type(record[field]).__name__}")
        by_id[record["id"]] = (where, record[field])
    missing = next((case for case in cases if case.item.id not in by_id), None)
    if missing is not None:
        raise InputError(f"{predictions}: no prediction for id {missing.item.id!r} ({missing.where}); predictions "
                         f"and --data must hold the same ids")
    return [by_id[case.item.id][1].strip() if field == "label" else by_id[case.item.id][1] for case in cases]


def _load_options(model, adapter, device, dtype, trust_remote_code, allow_pickle):
    from gptcli.models.loader import LoadOptions

    return LoadOptions(model, device, dtype, trust_remote_code, adapter, allow_pickle=allow_pickle)


# ---------------------------------------------------------------- running the task, keeping its results


class _KeepingSink(ResultSink):
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


def _scoring(run_class):
    """``run_class`` (a task's TaskRun) as eval runs it: under its own command name, its results kept."""

    class Scoring(run_class):
        command = f"eval {run_class.command.removeprefix('eval ')}"

        def open_sink(self, run):
            self.kept = _KeepingSink(self.output, run, self.overwrite)
            return self.kept

    return Scoring


def _results(run, items: list, load_options) -> dict:
    run.execute(items, load_options)
    return run.kept.every_record()


def _predict(run, cases: list[_Case], load_options, field: str) -> list[str]:
    results = _results(run, [case.item for case in cases], load_options)
    return [results[case.item.id][field] or "" for case in cases]


class _ClassifyRun(classify_cli.Run):
    """classify's run; without --labels, a classifier with labels of its own uses them (not those of --data)."""

    own_labels_allowed = False

    def work(self, lm, items, sink, clock) -> None:
        from gptcli.models import kinds
        from gptcli.services.classify_encoders import is_nli

        if self.own_labels_allowed and lm.kind == kinds.SEQUENCE_CLASSIFIER and not is_nli(lm.model.config):
            self.params = replace(self.params, labels=())
        super().work(lm, items, sink, clock)


@dataclass
class _Text:
    """One text whose loss is measured, with the fields carried to its result."""

    id: object
    text: str
    where: str
    fields: dict


class _Perplexity(common.TaskRun):
    """perplexity: the mean token loss of each text."""

    command = "eval perplexity"
    unit = "text"
    RESULT_FIELDS = ("loss", "tokens", "windows")

    def accepts(self) -> tuple[str, ...]:
        from gptcli.models.kinds import CAUSAL_LM

        return (CAUSAL_LM,)

    def work(self, lm, items: list, sink, clock) -> None:
        from gptcli import console
        from gptcli.services.perplexity import token_losses, window_size

        params = common.with_auto_batch_size(self.params, lm, self.auto_batch, window_size(lm, self.params))
        started = time.perf_counter()
        tokens = 0
        with console.Progress("scoring", len(items)) as progress:
            for item, result in zip(items, token_losses(lm, [item.text for item in items], params)):
                fields = {name: value for name, value in item.fields.items() if name not in ("id", "text")}
                sink.emit({"id": item.id, **fields, "loss": result.loss, "tokens": result.tokens,
                           "windows": result.windows}, "")
                tokens += result.tokens
                progress.advance()
        if self.show_stats:
            seconds = time.perf_counter() - started
            console.info(common.stats_line(lm, clock, f"{len(items)} texts, {tokens} tok scored in {seconds:.2f} s"))


# ---------------------------------------------------------------- the report


def _show(report: dict, lines: list[str], json_output: bool) -> None:
    from gptcli import textio

    if json_output:
        textio.write_json_line(report)
    else:
        textio.write_stdout("\n".join(lines) + "\n")


def _aligned(rows: list[list[str]], left: tuple[int, ...] = (0,)) -> list[str]:
    """Rows as columns: the ``left`` ones (names, text) left-aligned, the others right-aligned (numbers)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) if column in left else cell.rjust(width)
                      for column, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]


def _classify_lines(report) -> list[str]:
    summary = _aligned([["records", str(report.count)], ["accuracy", f"{report.accuracy:.4f}"],
                        ["macro-F1", f"{report.macro_f1:.4f}"]])
    per_label = _aligned([["label", "precision", "recall", "f1", "support"]] + [
        [label, f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", str(s.support)]
        for label, s in report.per_label.items()])
    matrix = _aligned([["expected \\ predicted", *report.labels]] + [
        [label, *map(str, row)] for label, row in zip(report.labels, report.confusion)])
    return [*summary, "", *per_label, "", "confusion matrix (rows: expected, columns: predicted)", *matrix]


def _plot_confusion(report, plot: str) -> None:
    """The confusion matrix as an image, written whole (a temporary file, then renamed)."""
    import os
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gptcli.errors import GptcliError

    size = max(4.0, 0.6 * len(report.labels) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    axes.imshow(report.confusion, cmap="Blues")  # each cell is labelled with its count below: no colour bar
    ticks = range(len(report.labels))
    axes.set_xticks(ticks, report.labels, rotation=45, ha="right")
    axes.set_yticks(ticks, report.labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("expected")
    axes.set_title(f"accuracy {report.accuracy:.3f} · macro-F1 {report.macro_f1:.3f}")
    top = max(max(row) for row in report.confusion) or 1
    for i, row in enumerate(report.confusion):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    figure.tight_layout()
    path = Path(plot).expanduser()
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        figure.savefig(temp)
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise GptcliError(f"cannot write --plot {plot}: {exc.strerror}; the scores above are complete") from None
    finally:
        plt.close(figure)
