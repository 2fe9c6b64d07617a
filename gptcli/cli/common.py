"""Pieces every command shares: where the input comes from, where results go, and stats."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field

from gptcli import console, textio
from gptcli.errors import InputError, UsageError


def single_text(argument: str | None, what: str = "prompt") -> str:
    """The one text a command works on: argument, stdin, or both.

    ``-`` or no argument with stdin piped reads stdin. With an argument and piped
    stdin, stdin is the context and the argument the instruction.
    """
    if argument == "-":
        text = textio.read_stdin()
    elif argument is None:
        if not textio.stdin_is_piped():
            raise UsageError(f"no {what}: give it as an argument, pipe it on stdin, or use --input FILE")
        text = textio.read_stdin()
    else:
        context = textio.read_stdin() if textio.stdin_is_piped() else ""
        text = f"{argument}\n\n{context.rstrip()}" if context.strip() else argument
    if not text.strip():
        raise InputError(f"the {what} is empty" + (" (stdin gave no text)" if argument in (None, "-") else ""))
    return text


def check_batch_args(argument: str | None, input_file: str | None, output: str | None,
                     other_inputs: tuple[str | None, ...] = ()) -> None:
    """Refuse an argument with --input, and an --output that cannot be right (one of the inputs ...)."""
    from gptcli.outputs import check_output_path

    if input_file is not None and argument is not None:
        raise UsageError("give either a text argument or --input FILE, not both")
    if input_file is not None and not input_file.strip():
        raise UsageError("--input is empty; give a file name, or - for stdin")
    if output is not None:
        check_output_path(output, [input_file, *other_inputs])


def check_server_args(**given) -> None:
    """With --server the server has loaded the model: options that shape loading are its own.

    Raises:
        UsageError: naming the first such option given, and where it belongs.
    """
    defaults = {"device": "auto", "dtype": "auto", "engine": "transformers"}
    for name, value in given.items():
        if value not in (None, False, defaults.get(name)):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} does not apply with --server: the server loaded its model; pass {flag} to "
                             f"`gptcli serve` instead")


LLAMACPP_INSTALL = ("CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install 'llama-cpp-python==0.3.36' "
                    "(it compiles for a few minutes)")


def engine_setting(engine: str) -> dict:
    """--engine for the run record when it is not the default (records made before the option keep matching):
    a rerun on another engine rounds differently, so it must not add to the same --output."""
    return {} if engine == "transformers" else {"engine": engine}


def check_engine(engine: str) -> None:
    """--engine names a known engine, and llama.cpp's bindings are installed when it is asked for.

    Raises:
        UsageError: with the choices, or the install command.
    """
    from gptcli.engine.llamacpp_native import available
    from gptcli.models.loader import ENGINES, LLAMACPP

    if engine not in ENGINES:
        raise UsageError(f"unknown --engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == LLAMACPP and not available():
        raise UsageError(f"--engine llama.cpp needs llama-cpp-python: {LLAMACPP_INSTALL}")


def refuse_result_fields(records: list, result_fields: tuple[str, ...], command: str) -> None:
    """Refuse an input record with a field of the same name as one the result is written under.

    Records are carried into their results, so the user's field (a reference label, summary or
    translation kept for scoring) would be replaced without a word.

    Raises:
        InputError: naming the record's file and line, the field, and the fix.
    """
    for record in records:
        for name in result_fields:
            if name in record.fields:
                scoring = (f"; to score the model against it, run `gptcli eval {command} --data FILE`"
                           if (command, name) in REFERENCES else "")
                raise InputError(f"{record.where}: field {name!r} is where `gptcli {command}` writes its result, "
                                 f"so yours would be lost; rename it (e.g. to 'input_{name}') or drop it{scoring}")


# A reference a user keeps in the input to compare with: what `gptcli eval` reads.
REFERENCES = {("classify", "label"), ("summarize", "summary"), ("translate", "translation")}


def run_settings(output: str | None, model: str | None, adapter: str | None = None, server: str | None = None,
                 task: str = "generate", **options) -> dict:
    """What makes the results of this run what they are, for the --output file's run record:
    the model (by identity, not only by name; with ``server``, the identity of the model that
    server runs ``task`` with) and the options that change results, by flag name.
    Empty without --output: nothing to compare then."""
    if output is None:
        return {}
    if server:
        from gptcli.cli.remote import served_model

        identity = served_model(server, model, task)["identity"]
    else:
        from gptcli.models.identity import model_identity

        identity = model_identity(model, adapter)
    settings = {"--model": identity}
    settings.update({"--" + name.replace("_", "-"): _plain(value) for name, value in options.items()})
    return settings


def _plain(value):
    """An option's value as JSON keeps it (enums by value, tuples as lists)."""
    if hasattr(value, "value"):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def run_record(command: str, settings: dict, items: list):
    """The RunRecord of this run: its command, settings, and a digest of each item (its text and
    the fields carried into its result)."""
    from gptcli.outputs import RunRecord, input_digest, input_key

    return RunRecord(command, settings, {input_key(item.id): input_digest(_identity(item)) for item in items})


def _identity(item) -> dict:
    """What decides an item's result besides the settings: its text, fields and images' bytes."""
    identity = {"text": getattr(item, "text", None), "fields": item.fields}
    pictures = getattr(getattr(item, "prompt", None), "images", ())
    if pictures:  # (only then: the digests of runs without images stay what they were)
        identity["images"] = [image.digest for image in pictures]
    return identity


@dataclass
class RunClock:
    """Wall-clock marks of one command, for --stats."""

    started: float = field(default_factory=time.perf_counter)
    load_seconds: float = 0.0


@dataclass
class TaskRun:
    """classify, summarize and translate after their options and inputs are checked: skip what the
    --output file already holds, load the model, and hand the rest to ``work``."""

    params: object
    auto_batch: bool
    json_output: bool
    output: str | None
    show_stats: bool
    settings: dict = field(default_factory=dict)  # see run_settings
    overwrite: bool = False
    server: str | None = None  # --server: the work is done by this `gptcli serve`
    model: str | None = None  # --model as given: the name the server is asked for
    processes: int = 1  # --num-processes

    command = ""  # the subcommand, for the loader's messages
    unit = "input"  # what one item is, for "nothing to do"

    def accepts(self) -> tuple[str, ...]:
        """The model kinds this command works with."""
        raise NotImplementedError

    def work(self, lm, items: list, sink, clock: RunClock) -> None:
        raise NotImplementedError

    def work_remote(self, client, items: list, sink, clock: RunClock) -> None:
        """``work`` done by the server ``client`` talks to (cli.remote.TaskAnswers)."""
        raise NotImplementedError

    def open_sink(self, run):
        """Where the results go (``gptcli eval`` keeps them to score instead of printing them)."""
        from gptcli.cli.sink import ResultSink

        return ResultSink(self.output, self.json_output, run, overwrite=self.overwrite)

    # The --num-processes side (cli.spread): how results are keyed, and the same job writing to a part.
    key_fields = ("id",)

    def keys_of(self, item) -> list[tuple]:
        return [(item.id,)]

    def run_record_of(self, items: list):
        return run_record(self.command, self.settings, items)

    def open_final(self, run):
        return self.open_sink(run)

    def part(self, output: str) -> "TaskRun":
        from dataclasses import replace

        return replace(self, output=output, overwrite=False, processes=1)

    def execute(self, items: list, load_options) -> None:
        """Run on ``items``: here, or spread over processes (--num-processes, a launcher)."""
        from gptcli.cli import spread

        if spread.spreads(self.processes):
            spread.run(self, items, load_options)
        else:
            spread.note_leftover_parts(self.output)
            self.run_here(items, load_options)

    def run_here(self, items: list, load_options, recorded: list | None = None) -> None:
        """``recorded``: the items the run record covers, when they are more than these (a part's)."""
        from gptcli.models import load_model

        clock = RunClock()
        run = self.run_record_of(recorded or items)
        with self.open_sink(run) as sink:
            todo = pending(items, lambda id_: sink.is_done((id_,)), self.unit)
            if todo and self.server:
                from gptcli.client import ServerClient

                self.work_remote(ServerClient(self.server), todo, sink, clock)
            elif todo:
                lm = load_model(load_options, accept=self.accepts(), command=self.command)
                self.work(lm, todo, sink, clock)


def write_results(items: list, results, sink, doing: str, record, line, seen=None) -> None:
    """Write each item's ItemResult (services.records) through ``sink``, a local run's and a server's alike:
    its logs and warnings on stderr, then ``record(item, fields)`` and the stdout ``line(fields)``.
    ``seen(item, result)``, when given, is told of each (for notes summed up at the end)."""
    with console.Progress(doing, len(items)) as progress:
        for item, result in zip(items, results):
            for text in result.logs:
                console.log(text)
            for text in result.warnings:
                console.warn(text)
            sink.emit(record(item, result.fields), line(result.fields))
            if seen is not None:
                seen(item, result)
            progress.advance()


def pending(items: list, is_done, what: str) -> list:
    """The items that have no result in the --output file yet (all of them without --output)."""
    todo = [item for item in items if not is_done(item.id)]
    if not todo:
        console.info(f"nothing to do: every {what} already has a result in the --output file")
    return todo


def with_auto_batch_size(params, lm, auto: bool, tokens_per_row: int):
    """``params`` with a batch size chosen from free memory unless the user gave one (see
    ``services.batching.auto_batched``); the choice is logged."""
    from gptcli.services.batching import auto_batched

    params, chosen = auto_batched(params, lm, auto, tokens_per_row)
    if chosen:
        console.log(chosen)
    return params


def stats_line(lm, clock: RunClock, work: str) -> str:
    """The --stats line: load, the command's own ``work`` figures, total time, memory, placement."""
    return (f"imports {lm.import_seconds:.2f} s · load {lm.load_seconds:.2f} s · {work} · "
            f"total {time.perf_counter() - clock.started:.2f} s · {peak_memory_text(lm.device)} · "
            f"{lm.placement.device}/{lm.placement.label}")


def remote_stats_line(client, clock: RunClock, work: str) -> str:
    """The --stats line of a run done by a server: its URL, the command's ``work`` figures, total time."""
    return f"server {client.url} · {work} · total {time.perf_counter() - clock.started:.2f} s"


def peak_memory_text(device) -> str:
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if sys.platform == "darwin":
        rss_mb /= 1024  # bytes on macOS
    text = f"peak RSS {rss_mb:.0f} MiB"
    if str(device).startswith("cuda"):
        import torch

        text += f", peak GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    return text


def report_stats(lm, stats, clock: RunClock) -> None:
    """One stats line on stderr."""
    speed = stats.generated_tokens / stats.decode_seconds if stats.decode_seconds else 0.0
    first = f"{stats.first_token_seconds:.3f} s" if stats.first_token_seconds is not None else "n/a"
    guessed = getattr(stats, "drafted_tokens", 0)
    lookup = f" · prompt lookup kept {stats.accepted_tokens} of {guessed} guessed tok" if guessed else ""
    console.info(stats_line(lm, clock, f"prompt {stats.prompt_tokens} tok · first token {first} · "
                                       f"{stats.generated_tokens} tok in {stats.decode_seconds:.2f} s ({speed:.1f} tok/s)"
                                       f"{lookup}"))
