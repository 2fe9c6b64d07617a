"""`gptcli eval`: how well a model does a task on your labelled data.

Each task runs as its own command runs it: the same options (taken from that command's
signature, so their help is the same), the same service, batching and --output records.
The predictions are then scored against the references in --data. --predictions scores
predictions made earlier instead, and loads no model.

Here: the commands and their options. Reading and checking the input: eval_cases; the task
runs: eval_runs; the table, the JSON object and the plot: eval_report.
"""

from __future__ import annotations

import inspect
import typing
from typing import Annotated, Optional

import typer

from gptcli.cli import classify as classify_cli
from gptcli.cli import common, eval_cases, eval_report, eval_runs
from gptcli.cli import options as opt
from gptcli.cli import summarize as summarize_cli
from gptcli.cli import translate as translate_cli

EVAL_PANEL = "Evaluation"

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
    examples: _C["examples"] = None,
    hypothesis_template: _C["hypothesis_template"] = _CD["hypothesis_template"],
    label_template: _C["label_template"] = None,
    prompt: _C["prompt"] = None,
    predictions: _predictions("classify", "label") = None,
    model: _C["model"] = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    engine: opt.EngineOpt = "transformers",
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

      gptcli eval classify --data test.jsonl --examples train-8-per-label.jsonl
    """
    from gptcli.services import classify as classify_service
    from gptcli.services import metrics

    cases = eval_cases.read_cases("classify", data, "label", classify_service.RESULT_FIELDS,
                                  lambda r, text: classify_cli.Item(r.id, text, eval_cases.carried(r, "label")))
    given = classify_cli.read_labels(labels, labels_file)
    chosen = given or eval_cases.labels_in(cases, data)
    eval_cases.check_references(cases, chosen, given)
    shown = classify_cli.read_examples(examples, chosen)
    eval_cases.warn_examples_in_data(shown, cases)
    params = classify_cli.classify_params(chosen, False, None, batch_size, prompt, hypothesis_template,
                                          label_template, shown)
    eval_cases.check_outputs(predictions, model, output, (data, labels_file, examples, predictions), plot, overwrite)
    if predictions is not None:
        predicted = eval_cases.read_predictions(predictions, "label", cases)
        source = {"predictions": predictions}
    else:
        common.check_engine(engine)
        load = classify_cli.classify_load_options(model, device, dtype, trust_remote_code, allow_pickle, engine)
        settings = common.run_settings(output, load.model, dtype=dtype, labels=chosen, prompt=prompt,
                                       hypothesis_template=hypothesis_template, label_template=label_template,
                                       examples=classify_cli.examples_digest(shown), **common.engine_setting(engine))
        scoring = eval_runs.scoring(eval_runs.ClassifyRun)
        run = scoring(params, batch_size == 0, False, output, stats, settings, overwrite)
        run.own_labels_allowed = not given
        predicted, source = eval_runs.predict(run, cases, load, "label"), {"model": load.model}
    references = [case.reference for case in cases]
    every = list(chosen) + sorted({*predicted} - set(chosen))  # a classifier's own labels may add some
    report = metrics.classification_report(references, predicted, every)
    eval_report.show({"task": "classify", "data": data, **source, **report.to_dict()},
                     eval_report.classify_lines(report), json_output)
    if plot is not None:
        eval_report.plot_confusion(report, plot)


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
    engine: opt.EngineOpt = "transformers",
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
    from gptcli.services import summarize as summarize_service
    from gptcli.services.summarize import SummarizeParams

    params = SummarizeParams(length.value, max_new_tokens, overflow.value, batch_size or 1, max_input_tokens)
    params.validate()
    cases = eval_cases.read_cases(
        "summarize", data, "summary", summarize_service.RESULT_FIELDS,
        lambda r, text: summarize_cli.Item(r.id, text, r.where, eval_cases.carried(r, "summary")))
    eval_cases.check_outputs(predictions, model, output, (data, predictions))
    if predictions is not None:
        predicted = eval_cases.read_predictions(predictions, "summary", cases)
        source = {"predictions": predictions}
    else:
        common.check_engine(engine)
        load = eval_cases.load_options(model, None, device, dtype, trust_remote_code, allow_pickle, engine)
        settings = common.run_settings(output, model, dtype=dtype, length=length, max_new_tokens=max_new_tokens,
                                       overflow=overflow, max_input_tokens=max_input_tokens,
                                       **common.engine_setting(engine))
        scoring = eval_runs.scoring(summarize_cli.Run)
        run = scoring(params, batch_size == 0, False, output, stats, settings, overwrite)
        predicted, source = eval_runs.predict(run, cases, load, "summary"), {"model": model}
    scores = metrics.rouge(predicted, [case.reference for case in cases])
    eval_report.show({"task": "summarize", "data": data, **source, "count": len(cases), **scores},
                     eval_report.summarize_lines(len(cases), scores), json_output)


@app.command("translate")
def translate(
    data: _data("text and translation (the reference)"),
    to: _T["to"] = None,
    source: _T["source"] = None,
    max_new_tokens: _T["max_new_tokens"] = None,
    presence_penalty: _T["presence_penalty"] = None,
    frequency_penalty: _T["frequency_penalty"] = None,
    predictions: _predictions("translate", "translation") = None,
    model: opt.Model = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    engine: opt.EngineOpt = "transformers",
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
    from gptcli.services import translate as translate_service

    params = translate_cli.translate_params(to, source, batch_size, max_new_tokens, presence_penalty,
                                            frequency_penalty)
    cases = eval_cases.read_cases(
        "translate", data, "translation", translate_service.RESULT_FIELDS,
        lambda r, text: translate_cli.Item(r.id, text.strip(), eval_cases.carried(r, "translation")))
    eval_cases.check_outputs(predictions, model, output, (data, predictions))
    if predictions is not None:
        predicted = eval_cases.read_predictions(predictions, "translation", cases)
        origin = {"predictions": predictions}
    else:
        common.check_engine(engine)
        load = eval_cases.load_options(model, None, device, dtype, trust_remote_code, allow_pickle, engine)
        settings = common.run_settings(output, model, dtype=dtype, to=to, max_new_tokens=max_new_tokens,
                                       presence_penalty=params.presence_penalty,
                                       frequency_penalty=params.frequency_penalty, **{"from": source},
                                       **common.engine_setting(engine))
        scoring = eval_runs.scoring(translate_cli.Run)
        run = scoring(params, batch_size == 0, False, output, stats, settings, overwrite)
        predicted, origin = eval_runs.predict(run, cases, load, "translation"), {"model": model}
    references = [case.reference for case in cases]
    chrf, bleu = metrics.chrf(predicted, references), metrics.bleu(predicted, references, metrics.bleu_tokenizer(to))
    eval_report.show({"task": "translate", "data": data, **origin, "count": len(cases), "chrf": chrf.score,
                      "chrf_signature": chrf.signature, "bleu": bleu.score, "bleu_signature": bleu.signature},
                     eval_report.translate_lines(len(cases), chrf, bleu), json_output)


@app.command("perplexity")
def perplexity(
    data: _data("text (a .txt file: a text a line), or finetune's prompt+completion, instruction+output or messages"),
    model: opt.Model = None,
    adapter: opt.Adapter = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    engine: opt.EngineOpt = "transformers",
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
    Records in finetune's other formats are scored on what finetune trains: the completion, output
    or assistant turns and the EOS ending each, the prompt as context (as the finetune model card).

    Examples:

      gptcli eval perplexity --data held-out.txt --model smollm2

      gptcli eval perplexity --data held-out.jsonl --model smollm2 --adapter runs/lora --json
    """
    from gptcli import textio
    from gptcli.services import metrics
    from gptcli.services.perplexity import PerplexityParams

    params = PerplexityParams(batch_size or 1)
    records = textio.read_records(data, "text")
    common.refuse_result_fields(records, eval_runs.PerplexityRun.RESULT_FIELDS, "eval perplexity")
    items = [eval_runs.text_of(r) for r in records]
    eval_cases.check_outputs(None, model, output, (data,))
    common.check_engine(engine)
    load = eval_cases.load_options(model, adapter, device, dtype, trust_remote_code, allow_pickle, engine)
    settings = common.run_settings(output, model, adapter, dtype=dtype, **common.engine_setting(engine))
    scoring = eval_runs.scoring(eval_runs.PerplexityRun)
    run = scoring(params, batch_size == 0, False, output, stats, settings, overwrite)
    loss, tokens = eval_runs.corpus_loss(items, eval_runs.results(run, items, load), data)
    perplexity = metrics.perplexity(loss)
    eval_report.show({"task": "perplexity", "data": data, "model": model, "adapter": adapter, "count": len(items),
                      "tokens": tokens, "mean_loss": loss, "perplexity": perplexity},
                     eval_report.perplexity_lines(len(items), tokens, loss, perplexity), json_output)
