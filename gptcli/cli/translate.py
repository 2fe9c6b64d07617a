"""`gptcli translate`: line-true translation of the argument, stdin, or a batch file."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from gptcli.cli import common, spread
from gptcli.cli import options as opt
from gptcli.errors import InputError, UsageError

LANGUAGE_PANEL = "Languages"


@dataclass
class Item:
    """One input line (empty for a blank line), with the fields carried to its output."""

    id: object
    text: str
    fields: dict


# None keeps the service's default (services/translate.py: PRESENCE_PENALTY, FREQUENCY_PENALTY), so
# importing this module does not import the service.
PresencePenalty = Annotated[Optional[float], typer.Option(
    min=-2, max=2, rich_help_panel=LANGUAGE_PANEL,
    help="Causal LMs: lower a token's logit once if the translation so far has it (OpenAI's presence "
         "penalty; the source is never counted). Default 0.5, measured to curb loops; 0 is off.",
    show_default=False)]
FrequencyPenalty = Annotated[Optional[float], typer.Option(
    min=-2, max=2, rich_help_panel=LANGUAGE_PANEL,
    help="Causal LMs: lower it for each time the translation so far has it. Default 1.0; 0 is off.",
    show_default=False)]


def translate(
    text: Annotated[Optional[str], typer.Argument(
        help="The text; each of its lines is translated. Without it (or with -), each line of stdin.",
        show_default=False)] = None,
    to: Annotated[Optional[str], typer.Option(
        "--to", "-t", rich_help_panel=LANGUAGE_PANEL,
        help="Target language (required): an ISO 639-1 code such as de, fr, zh (de-DE: the model's code for "
             "it, else de), or the model's own code.",
        show_default=False)] = None,
    source: Annotated[Optional[str], typer.Option(
        "--from", "-f", rich_help_panel=LANGUAGE_PANEL,
        help="Source language; required by NLLB, M2M100 and instruction T5 models, optional otherwise.",
        show_default=False)] = None,
    max_new_tokens: Annotated[Optional[int], typer.Option(
        min=1, rich_help_panel=LANGUAGE_PANEL,
        help="Most tokens per translated segment; default: twice the segment's length plus 16.",
        show_default=False)] = None,
    presence_penalty: PresencePenalty = None,
    frequency_penalty: FrequencyPenalty = None,
    model: opt.Model = None,
    server: opt.Server = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    engine: opt.EngineOpt = "transformers",
    trust_remote_code: opt.TrustRemoteCode = False,
    allow_pickle: opt.AllowPickle = False,
    input_file: Annotated[Optional[str], typer.Option(
        "--input", "-i", rich_help_panel=opt.INPUT_PANEL,
        help="A batch file: records with a text field (other fields are carried) in .jsonl, .json (an array) "
             "or .csv/.tsv (a header row), or .txt (a line each; blank lines stay blank in text output).")] = None,
    json_output: opt.JsonOutput = False,
    output: opt.OutputFile = None,
    batch_size: opt.BatchSize = 0,
    stats: opt.Stats = False,
    overwrite: opt.Overwrite = False,
    num_processes: opt.NumProcesses = 1,
    verbose: opt.Verbose = False,
) -> None:
    """Translate text line by line: N lines in, N lines out, blank lines kept.

    Works with Marian (opus-mt-*), NLLB, M2M100 and T5 models, and any instruction-tuned causal LM.

    Examples:

      gptcli translate "Good morning" --to fr --model Helsinki-NLP/opus-mt-en-fr

      cat notes.txt | gptcli translate --from en --to de --model facebook/nllb-200-distilled-600M > notes.de.txt

      gptcli translate --input lines.jsonl --to es --output lines.es.jsonl

      gptcli translate --server http://127.0.0.1:8000 --to fr "Good morning"    # through a running `gptcli serve`
    """
    params = translate_params(to, source, batch_size, max_new_tokens, presence_penalty, frequency_penalty)
    common.check_engine(engine)
    if server:
        common.check_server_args(device=device, dtype=dtype, engine=engine, trust_remote_code=trust_remote_code,
                                 allow_pickle=allow_pickle)
    spread.check_options(num_processes, output, server, text, input_file)
    common.check_batch_args(text, input_file, output)
    items = _read_items(text, input_file)
    settings = common.run_settings(output, model, None, server, "translate", dtype=dtype, to=to,
                                   max_new_tokens=max_new_tokens, presence_penalty=params.presence_penalty,
                                   frequency_penalty=params.frequency_penalty, **{"from": source},
                                   **common.engine_setting(engine))
    Run(params, batch_size == 0, json_output, output, stats, settings, overwrite, server, model,
        processes=num_processes).execute(
        items, _load_options(model, device, dtype, trust_remote_code, allow_pickle, engine))


def translate_params(to: str | None, source: str | None, batch_size: int, max_new_tokens: int | None,
                     presence_penalty: float | None = None, frequency_penalty: float | None = None):
    """The language options as checked TranslateParams (`gptcli eval translate` takes the same options).
    A penalty left out (None) keeps the service's measured default."""
    from gptcli.services.languages import check_pair
    from gptcli.services.translate import TranslateParams

    if to is None:
        raise UsageError("give the target language: --to de (an ISO 639-1 code such as de, fr, zh)")
    check_pair(to, source)
    penalties = {name: value for name, value in (("presence_penalty", presence_penalty),
                                                 ("frequency_penalty", frequency_penalty)) if value is not None}
    return TranslateParams(to, source, batch_size or 1, max_new_tokens, **penalties)


def _load_options(model, device, dtype, trust_remote_code, allow_pickle, engine="transformers"):
    from gptcli.models.loader import LoadOptions

    return LoadOptions(model, device, dtype, trust_remote_code, allow_pickle=allow_pickle, engine=engine)


def _read_items(text: str | None, input_file: str | None) -> list[Item]:
    """Lines from --input, the argument, or stdin; a blank line stays as an empty item."""
    from gptcli import textio

    if input_file is not None and textio.reads_as_lines(input_file):
        return _text_file_items(input_file, textio.read_lines(input_file))
    if input_file is not None:
        from gptcli.services.translate import RESULT_FIELDS

        records = textio.read_records(input_file, "text")
        items = [Item(r.id, r.text("text").strip(), r.fields) for r in records]  # a missing text is named first
        common.refuse_result_fields(records, RESULT_FIELDS, "translate")
        return items
    if text is not None and text != "-":
        lines = textio.split_lines(textio.check_argument(text, "the text")) or [text]
    elif text is None and not textio.stdin_is_piped():
        raise UsageError("no text: give it as an argument, pipe lines on stdin, or use --input FILE")
    else:
        lines = textio.split_lines(textio.read_stdin())
    if not any(line.strip() for line in lines):
        raise InputError("no text to translate (the input is empty or blank)")
    return [Item(number, line.strip(), {"text": line.strip()}) for number, line in enumerate(lines, start=1)]


def _text_file_items(name: str, lines: list[str]) -> list[Item]:
    """A text --input: every line an item, its id its line number, blank lines blank items (trailing
    ones too, as from stdin). The fields are what the record reader gave, so older --output files resume."""
    if not any(line.strip() for line in lines):
        raise InputError(f"{name}: no records (the file is empty or holds only blank lines)")
    return [Item(number, line.strip(), {"text": line if line.strip() else ""})
            for number, line in enumerate(lines, start=1)]


class Run(common.TaskRun):
    """translate: every line, line-true."""

    command = "translate"
    unit = "line"

    def accepts(self) -> tuple[str, ...]:
        from gptcli.models.kinds import CAUSAL_LM, SEQ2SEQ

        return (CAUSAL_LM, SEQ2SEQ)

    def work(self, lm, items: list[Item], sink, clock) -> None:
        from dataclasses import asdict

        from gptcli import console
        from gptcli.services.translate import make_translator, translation_results

        params = common.with_auto_batch_size(self.params, lm, self.auto_batch, self.params.row_tokens)
        translator = make_translator(lm, params)
        if translator.route.note:
            console.warn(translator.route.note)
        started = time.perf_counter()
        self._write(items, translation_results(translator, [item.text for item in items]), sink,
                    lambda: translator.route.target)
        if self.show_stats:
            work = _work_text(asdict(translator.stats), len(items), time.perf_counter() - started)
            console.info(common.stats_line(lm, clock, work))

    def work_remote(self, client, items: list[Item], sink, clock) -> None:
        from dataclasses import asdict

        from gptcli import console
        from gptcli.cli import remote

        parts = remote.parts(items, lambda item: item.text, most=2 * remote.TASK_ITEMS)  # lines are short
        answers = remote.TaskAnswers(client, TRANSLATE_PATH, [
            {"model": self.model, "params": asdict(self.params), "auto_batch": self.auto_batch,
             "lines": [item.text for item in part]} for part in parts])
        started = time.perf_counter()
        self._write(items, answers, sink, lambda: answers.run["target"])
        if self.show_stats:
            work = _work_text(answers.stats, len(items), time.perf_counter() - started)
            console.info(common.remote_stats_line(client, clock, work))

    def _write(self, items: list[Item], results, sink, target) -> None:
        """Write the results; then say how many stopped at their limit, and which lines are in another
        language (``target()``: the language, as the model names it)."""
        from gptcli import console
        from gptcli.services.translate import WRONG_LANGUAGE

        cut, wrong = 0, []

        def seen(item: Item, result) -> None:
            nonlocal cut
            cut += result.fields["finish_reason"] == "length"
            if result.marks.get(WRONG_LANGUAGE):
                wrong.append(str(item.id))

        common.write_results(items, results, sink, "translating", _record, lambda fields: fields["translation"],
                             seen)
        if cut:  # a result cut by a token limit says so
            console.warn(_cut_note(cut, len(items), self.params.max_new_tokens))
        if wrong:
            console.warn(_wrong_language_note(wrong, len(items), target()))


TRANSLATE_PATH = "/gptcli/v1/translate"


def _cut_note(cut: int, total: int, max_new_tokens: int | None) -> str:
    lines = f"{cut} of {total} lines"
    if max_new_tokens is not None:
        return f"{lines} stopped at --max-new-tokens {max_new_tokens} before the translation ended (finish_reason " \
               f"length); raise it for whole translations"
    return (f"{lines} stopped at their token limit (twice the segment's length plus 16, or the decoder's positions) "
            f"before the translation ended (finish_reason length); the model may be repeating itself")


def _wrong_language_note(ids: list[str], total: int, target: str) -> str:
    shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
    return (f"{len(ids)} of {total} lines do not look like {target}, even after a second try (id {shown}); "
            f"a translation model (--model Helsinki-NLP/opus-mt-..., facebook/nllb-200-distilled-600M) does "
            f"better than a small chat model")


def _record(item: Item, fields: dict) -> dict:
    record = {"id": item.id}
    record.update({k: v for k, v in item.fields.items() if k != "id"})
    record.update(fields)
    return record


def _work_text(stats: dict, lines: int, seconds: float) -> str:
    """--stats' figures from RunStats' fields (a local run's, or summed over a server's answers)."""
    calls, read, wrote = (stats.get(name, 0) for name in ("calls", "input_tokens", "generated_tokens"))
    rate = lines / seconds if seconds else 0.0
    return f"{lines} lines ({rate:.1f} lines/s), {calls} segments · read {read} tok · wrote {wrote} tok"
