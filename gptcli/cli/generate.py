"""`gptcli generate`: text from a prompt, stdin, or a batch file."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Annotated, List, Optional

import typer

from gptcli.cli import common, images, spread
from gptcli.cli import options as opt
from gptcli.cli import structured
from gptcli.errors import InputError, UsageError

SAMPLING = opt.SAMPLING_PANEL


class OutputFormat(str, Enum):
    gptcli = "gptcli"
    openai_batch = "openai-batch"
MAX_SAMPLES = 10_000  # per prompt; every sample is planned up front, so 10**20 ate all memory before the first


@dataclass
class Item:
    """One prompt to run, with the fields carried into its output record."""

    id: object
    prompt: object  # services.prompting.Prompt
    fields: dict
    batch: object = None  # openai_batch.BatchRequest, for a line of an OpenAI Batch file
    job: object = None  # generate_batch.ItemJob: the settings it runs with


def generate(
    prompt: Annotated[Optional[str], typer.Argument(
        help="The prompt. - reads stdin; with piped stdin and an argument, stdin is the context.",
        show_default=False)] = None,
    model: opt.Model = None,
    server: opt.Server = None,
    adapter: opt.Adapter = None,
    device: opt.Device = "auto",
    dtype: opt.Dtype = "auto",
    engine: opt.EngineOpt = "transformers",
    trust_remote_code: opt.TrustRemoteCode = False,
    allow_pickle: opt.AllowPickle = False,
    input_file: opt.InputFile = None,
    image: images.Images = None,
    system: opt.System = None,
    raw: Annotated[bool, typer.Option("--raw", rich_help_panel=opt.INPUT_PANEL,
                                      help="Send the text as it is, without the chat template.")] = False,
    truncate: opt.TruncateOpt = None,
    max_new_tokens: opt.MaxNewTokens = 256,
    temperature: opt.Temperature = 0.0,
    top_p: opt.TopP = 1.0,
    top_k: opt.TopK = 0,
    min_p: opt.MinP = 0.0,
    repetition_penalty: opt.RepetitionPenalty = 1.0,
    no_repeat_ngram_size: Annotated[int, typer.Option(rich_help_panel=SAMPLING,
                                                      help="Never repeat an n-gram of this size; 0 is off.")] = 0,
    presence_penalty: Annotated[float, typer.Option(
        rich_help_panel=SAMPLING, help="OpenAI's: lower a token's logit once if it was generated; -2 to 2.")] = 0.0,
    frequency_penalty: Annotated[float, typer.Option(
        rich_help_panel=SAMPLING, help="OpenAI's: lower it for each time it was generated; -2 to 2.")] = 0.0,
    seed: opt.Seed = None,
    stop: Annotated[Optional[List[str]], typer.Option(rich_help_panel=SAMPLING,
                                                      help="End the output before this string (repeatable).")] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", rich_help_panel=SAMPLING,
                                             help=f"Samples per prompt, at most {MAX_SAMPLES} (needs --temperature > 0).")] = 1,
    json_schema: structured.JsonSchema = None,
    json_object: structured.JsonObject = False,
    regex: structured.Regex = None,
    choice: structured.Choice = None,
    stream: Annotated[bool, typer.Option(rich_help_panel=opt.OUTPUT_PANEL,
                                         help="Print a single prompt's tokens as they are made.")] = True,
    json_output: opt.JsonOutput = False,
    output: opt.OutputFile = None,
    batch_size: opt.BatchSize = 0,
    output_format: Annotated[OutputFormat, typer.Option(
        "--output-format", rich_help_panel=opt.OUTPUT_PANEL,
        help="gptcli: a record per result; openai-batch: OpenAI Batch result lines (needs an OpenAI Batch "
             "--input: custom_id, url, body per line).")] = OutputFormat.gptcli,
    stats: opt.Stats = False,
    overwrite: opt.Overwrite = False,
    num_processes: opt.NumProcesses = 1,
    verbose: opt.Verbose = False,
) -> None:
    """Generate text from a prompt, from stdin, or from a batch file.

    Examples:

      gptcli generate "What is the capital of France?"

      cat notes.txt | gptcli generate "Turn these notes into an email"

      gptcli generate --input prompts.jsonl --output answers.jsonl --temperature 0.7 --seed 1

      gptcli generate --server http://127.0.0.1:8000 "Hello"    # through a running `gptcli serve`

      gptcli generate --input batch.jsonl --output-format openai-batch --output results.jsonl  # OpenAI Batch files

      gptcli generate --json-schema person.json "Invent a person" | jq .name    # always parses, always validates

      gptcli generate --model HuggingFaceTB/SmolVLM-256M-Instruct --image receipt.jpg "What is the total?"
    """
    from gptcli.services.generate import GenerationParams
    from gptcli.engine.sampling import SamplingParams

    sampling = SamplingParams(temperature, top_p, top_k, min_p, repetition_penalty, no_repeat_ngram_size, seed,
                              presence_penalty, frequency_penalty)
    constraint = structured.constraint_from_options(json_schema, json_object, regex, choice)
    params = GenerationParams(sampling, tuple(_unescape(s) for s in stop or ()), num_samples, batch_size,
                              constraint=constraint)
    _validate(params, max_new_tokens, system)
    structured.refuse_stops(constraint, params.stop)
    _check_adapter(adapter)
    common.check_engine(engine)
    if server:
        common.check_server_args(adapter=adapter, device=device, dtype=dtype, engine=engine,
                                 trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    spread.check_options(num_processes, output, server, prompt, input_file)
    common.check_batch_args(prompt, input_file, output)
    items = _read_items(prompt, input_file, image)
    _attach_jobs(items, params, max_new_tokens, raw, output_format)
    settings = common.run_settings(output, model, adapter, server, dtype=dtype, system=system, raw=raw, truncate=truncate,
                                   max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                   top_k=top_k, min_p=min_p, repetition_penalty=repetition_penalty,
                                   presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                                   no_repeat_ngram_size=no_repeat_ngram_size, seed=seed, stop=params.stop,
                                   num_samples=num_samples, **structured.run_setting(constraint),
                                   **common.engine_setting(engine))
    run = _Run(params, max_new_tokens, system, raw, truncate.value if truncate else None,
               stream and input_file is None and num_samples == 1 and not json_output and output is None,
               json_output, output, stats, settings, overwrite, server, output_format == OutputFormat.openai_batch, num_processes)
    run.execute(items, _load_options(model, adapter, device, dtype, trust_remote_code, allow_pickle, engine))


def _attach_jobs(items: list[Item], params, max_new_tokens: int, raw: bool, output_format) -> None:
    from gptcli.cli.generate_batch import job_for

    if output_format == OutputFormat.openai_batch and not all(item.batch for item in items):
        raise UsageError("--output-format openai-batch needs an OpenAI Batch --input (custom_id, url and body "
                         "on every line)")
    for item in items:
        item.job = job_for(item, params, max_new_tokens, raw)


def _validate(params, max_new_tokens: int, system: str | None) -> None:
    from gptcli import textio

    params.sampling.validate()
    for text, option in [(system, "--system"), *((stop, "--stop") for stop in params.stop)]:
        if text is not None:
            textio.check_argument(text, option)
    if max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if not 1 <= params.num_samples <= MAX_SAMPLES:
        raise UsageError(f"--num-samples must be between 1 and {MAX_SAMPLES}, got {params.num_samples}")
    if params.num_samples > 1 and params.sampling.greedy:
        raise UsageError("--num-samples above 1 needs --temperature above 0 (greedy gives the same text each time)")
    if any(not s for s in params.stop):
        raise UsageError("--stop must not be empty")


def _check_adapter(adapter: str | None) -> None:
    if adapter is not None and not adapter.strip():  # was ignored: the run went on without the adapter
        raise UsageError("--adapter is empty; give the adapter folder that `gptcli finetune` wrote")


def _unescape(text: str) -> str:
    """Let `--stop "\\n"` mean a newline, as users type it in a shell."""
    return text.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")


def _load_options(model, adapter, device, dtype, trust_remote_code, allow_pickle, engine="transformers"):
    from gptcli.models.loader import LoadOptions

    return LoadOptions(model, device, dtype, trust_remote_code, adapter, allow_pickle=allow_pickle, engine=engine)


def _read_items(prompt: str | None, input_file: str | None, image_specs: list[str] | None = None) -> list[Item]:
    from gptcli import textio
    from gptcli.services.prompting import Prompt

    if input_file is not None and "-" in (image_specs or ()) and input_file == "-":
        raise UsageError("--image - and --input - both read stdin; give one of them as a file")
    if input_file is None and "-" in (image_specs or ()) and prompt in (None, "-"):
        raise UsageError("--image - reads the image from stdin: give the prompt as an argument")
    shared = images.option_images(image_specs)  # before the prompt: stdin may be the image
    if input_file is None:
        if prompt not in (None, "-"):
            textio.check_argument(prompt, "the prompt")
        text = prompt if shared and "-" in image_specs else common.single_text(prompt)
        fields = {"prompt": text, **({"images": images.image_names(shared)} if shared else {})}
        return [Item(1, Prompt(text=text, images=shared), fields)]
    records = textio.read_records(input_file, "prompt")
    from gptcli import openai_batch

    if records and openai_batch.is_batch_record(records[0].fields):
        if shared:
            raise UsageError("--image is not for an OpenAI Batch --input; put image parts in its messages")
        from gptcli.cli.generate_batch import batch_items

        return batch_items(records, Item)
    items = [Item(r.id, _record_prompt(r, shared), r.fields) for r in records]  # a missing prompt is named first
    common.refuse_result_fields(records, RESULT_FIELDS, "generate")
    return items


def _record_prompt(record, shared: tuple = ()):
    from gptcli.services.prompting import Prompt

    own = images.record_images(record)
    if "messages" in record.fields:
        messages, parts = images.record_messages(record)
        if own or shared:
            raise InputError(f"{record.where}: a record with 'messages' gives its images as image parts of its "
                             f"messages, not in 'images' or with --image")
        return Prompt(messages=messages, where=record.where, images=parts)
    return Prompt(text=record.text("prompt"), where=record.where, images=own + shared)


# What _Sink._record writes after the input's fields; "sample" even with -n 1: it is part of the resume key.
RESULT_FIELDS = ("sample", "text", "prompt_tokens", "generated_tokens", "finish_reason")


@dataclass
class _Run:
    """One generate invocation after its options are checked: load, fit, generate, write."""

    params: object
    max_new_tokens: int
    system: str | None
    raw: bool
    truncate: str | None
    stream: bool
    json_output: bool
    output: str | None
    show_stats: bool
    settings: dict
    overwrite: bool
    server: str | None = None
    openai_batch: bool = False
    processes: int = 1  # --num-processes

    @property
    def key_fields(self) -> tuple[str, ...]:
        return ("custom_id",) if self.openai_batch else ("id", "sample")

    def keys_of(self, item: Item) -> list[tuple]:
        """An OpenAI batch line's result is keyed by its custom_id; a record's by its id and sample (None with -n 1)."""
        count = item.job.params.num_samples
        if self.openai_batch:
            return [(item.id,)]
        return [(item.id, None)] if count == 1 else [(item.id, sample) for sample in range(count)]

    def run_record_of(self, items: list[Item]):
        return common.run_record("generate", self.settings, items)

    def open_final(self, run):
        from gptcli.cli.sink import ResultSink

        return ResultSink(self.output, True, run, self.key_fields, self.overwrite)

    def part(self, output: str) -> "_Run":
        return replace(self, output=output, overwrite=False, processes=1, stream=False)

    def execute(self, items: list[Item], load_options) -> None:
        """Run on ``items``: here, or spread over processes (--num-processes, a launcher)."""
        if spread.spreads(self.processes):
            spread.run(self, items, load_options)
        else:
            spread.note_leftover_parts(self.output)
            self.run_here(items, load_options)

    def run_here(self, items: list[Item], load_options, recorded: list | None = None) -> None:
        """``recorded``: the items the run record covers, when they are more than these (a part's)."""
        from gptcli.models import load_model
        from gptcli.models.kinds import CAUSAL_LM

        clock = common.RunClock()
        run = self.run_record_of(recorded or items)
        sink = self._sink(run, items, load_options.model)
        try:
            todo = common.pending(items, sink.is_done, "input")
            if not todo:
                return
            if self.server:
                from gptcli.cli.generate_remote import generate_remote

                generate_remote(self, load_options.model, todo, sink, clock)
                return
            lm = load_model(load_options, accept=(CAUSAL_LM,), command="generate",
                            images=any(item.prompt.images for item in todo))
            if self.openai_batch:
                sink.model = lm.name
            self._generate(lm, todo, sink, clock)
        finally:
            sink.close()

    def _sink(self, run, items: list[Item], model: str | None):
        if self.openai_batch:
            from gptcli.cli.generate_batch import BatchResultSink

            return BatchResultSink(self.output, run, self.overwrite, model or "smollm2",
                                   {item.id: item.job for item in items})
        return _Sink(self.output, self.json_output, {item.id: item.job.params.num_samples for item in items}, run,
                     self.overwrite)

    def _generate(self, lm, items: list[Item], sink, clock) -> None:
        from gptcli import console
        from gptcli.services import generate as gen
        from gptcli.outputs import input_key
        from gptcli.services.batching import auto_batch_size, batch_token_budget, describe_auto_batch

        fitted = [self._fit(lm, item) for item in items]
        structured.check_model(lm, [item.job.params.constraint for item in items])
        params = self.params
        if params.batch_size == 0:
            longest = max(len(f.ids) + f.max_new_tokens for f in fitted)
            params = replace(params, batch_size=auto_batch_size(lm, longest), max_batch_tokens=batch_token_budget(lm))
            console.log(describe_auto_batch(params.batch_size, params.max_batch_tokens))
        stats = gen.GenerationStats()
        total = sum(item.job.params.num_samples for item in items)
        with console.Progress("generating", total) as progress:
            keys = [input_key(item.id) for item in items]  # seeded samples follow the input, not the batch
            for event in gen.generate(lm, fitted, params, stream=self.stream, stats=stats, keys=keys,
                                      per_prompt=[item.job.params for item in items]):
                if isinstance(event, gen.TextChunk):
                    sink.stream_text(event.text)
                    continue
                sink.write(items[event.index], event)
                progress.advance()
        sink.finish_note(total, self.max_new_tokens)
        if self.show_stats:
            common.report_stats(lm, stats, clock)

    def _fit(self, lm, item: Item):
        from gptcli import console
        from gptcli.services.prompting import fit_prompt

        fitted = fit_prompt(lm, item.prompt, self.system, item.job.raw, item.job.max_new_tokens, self.truncate)
        if fitted.note:
            console.warn(fitted.note)
        return fitted


class _Sink:
    """generate's view of the shared ResultSink: streaming, -n samples, and limit warnings."""

    def __init__(self, output: str | None, json_output: bool, samples: dict, run, overwrite: bool):
        from gptcli.cli.sink import ResultSink

        self.results = ResultSink(output, json_output, run, ("id", "sample"), overwrite)
        self.samples = samples  # item id -> samples it asks for (-n, or a batch line's n)
        self.streamed = False
        self.length_stops: list[tuple[int, int]] = []  # (tokens written, tokens asked) of results cut at a limit
        self.incomplete = 0  # constrained results cut at a limit: they do not parse

    def is_done(self, item_id) -> bool:
        count = self.samples[item_id]
        return all(self.results.is_done((item_id, s)) for s in ([None] if count == 1 else range(count)))

    def stream_text(self, text: str) -> None:
        self.streamed = True
        self.results.stream(text)

    def write(self, item: Item, completion) -> None:
        if completion.finish_reason == "length":
            self.length_stops.append((completion.generated_tokens, item.job.max_new_tokens))
            self.incomplete += item.job.params.constraint is not None
        # A streamed result is already on stdout: only its line end is missing.
        self.results.emit(self._record(item, completion), "" if self.streamed else completion.text)

    def _record(self, item: Item, completion) -> dict:
        record = {"id": item.id}
        record.update({k: v for k, v in item.fields.items() if k != "id"})
        if self.samples[item.id] > 1:
            record["sample"] = completion.sample
        record.update(text=completion.text, prompt_tokens=completion.prompt_tokens,
                      generated_tokens=completion.generated_tokens, finish_reason=completion.finish_reason)
        return record

    def finish_note(self, total: int, max_new_tokens: int) -> None:
        from gptcli import console

        structured.incomplete_note(self.incomplete, total)
        if not self.length_stops:
            return
        # A budget lowered to fit the context is a smaller limit than asked: name what was used.
        lowered = sorted({n for n, asked in self.length_stops if n < asked})
        at_option = sum(n >= asked for n, asked in self.length_stops)
        limit = (f"--max-new-tokens {max_new_tokens}" if all(asked == max_new_tokens for _, asked in self.length_stops)
                 else "their token limit (max_tokens or --max-new-tokens)")
        if not lowered:
            console.warn(f"{len(self.length_stops)} of {total} results stopped at {limit}; raise it for longer output")
            return
        used = str(lowered[0]) if len(lowered) == 1 else f"{lowered[0]}-{lowered[-1]}"
        also = f" ({at_option} at {limit})" if at_option else ""
        console.warn(f"{len(self.length_stops)} of {total} results stopped at their token limit: {used} new tokens, "
                     f"all that fit in the context after the prompt{also}; shorten the prompts for longer output")

    def close(self) -> None:
        self.results.close()
