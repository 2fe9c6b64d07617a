"""`gptcli embed`: a vector per text, from the argument, stdin lines, or a batch file."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Optional

import typer

from gptcli.cli import common, spread
from gptcli.cli import options as opt
from gptcli.errors import InputError, UsageError

VECTORS_PANEL = "Vectors"


class Format(str, Enum):
    jsonl = "jsonl"
    npy = "npy"


@dataclass
class Item:
    """One text to embed; ``where`` names it in errors (file:line, stdin:line, the text)."""

    id: object
    text: str
    where: str
    fields: dict  # what the run record's digest covers besides the text: nothing


def embed(
    text: Annotated[Optional[str], typer.Argument(
        help="The text to embed. Without it (or with -), each line of stdin is one text.",
        show_default=False)] = None,
    normalize: Annotated[Optional[bool], typer.Option(
        "--normalize/--no-normalize", rich_help_panel=VECTORS_PANEL, show_default=False,
        help="Unit-length vectors or not. Default: what the model's sentence-transformers config says (a "
             "Normalize step: all-MiniLM-L6-v2 has one); unit length for a model without that config.")] = None,
    truncate: Annotated[bool, typer.Option(
        "--truncate", rich_help_panel=VECTORS_PANEL,
        help="Cut texts longer than the model's limit to it (keeping their beginning), with a warning "
             "that counts them. Without it such a text is an error, before any is embedded.")] = False,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", rich_help_panel=opt.MODEL_PANEL,
        help="An embedding model: a local folder, a hub id, or minilm (all-MiniLM-L6-v2, the default). Pooled as "
             "its sentence-transformers config says (modules.json, 1_Pooling/config.json: mean, cls, max, "
             "lasttoken ...); mean over its tokens when it has none.")] = None,
    device: opt.Device = "auto",
    dtype: Annotated[str, typer.Option(
        rich_help_panel=opt.MODEL_PANEL,
        help="float32 (the default here: the vectors sentence-transformers gives), auto, bfloat16 or float16. "
             "bfloat16 moved MiniLM's vectors to a cosine of 0.9998 from float32's.")] = "float32",
    trust_remote_code: opt.TrustRemoteCode = False,
    allow_pickle: opt.AllowPickle = False,
    input_file: Annotated[Optional[str], typer.Option(
        "--input", "-i", rich_help_panel=opt.INPUT_PANEL,
        help="A batch file: .txt (a text per line, blank lines skipped, the line number is the id) or .jsonl "
             "(records with text and an optional id; .json and .csv too); - for stdin.")] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", rich_help_panel=opt.OUTPUT_PANEL,
        help="Write the vectors to this file: JSON lines, each flushed when done (a rerun resumes where it "
             "stopped), or a .npy array, written whole at the end.")] = None,
    output_format: Annotated[Optional[Format], typer.Option(
        "--format", rich_help_panel=opt.OUTPUT_PANEL, show_default=False,
        help="jsonl ({\"id\", \"embedding\"} a line) or npy (float32, a row per text in input order; needs "
             "--output; an interrupted run leaves no array and starts over). Default: npy for an --output "
             "ending in .npy, else jsonl.")] = None,
    batch_size: Annotated[int, typer.Option(
        min=0, rich_help_panel=opt.OUTPUT_PANEL,
        help="Texts per forward pass (sorted by length first, written in input order); 0: 32 on CPUs, "
             "128 on GPUs.")] = 0,
    stats: opt.Stats = False,
    overwrite: opt.Overwrite = False,
    num_processes: opt.NumProcesses = 1,
    verbose: opt.Verbose = False,
) -> None:
    """Embed texts into vectors: one {"id", "embedding"} JSON line per text, in input order.

    Without --model: the packaged all-MiniLM-L6-v2 (384 numbers, unit length). Texts longer than
    the model's limit (256 tokens for MiniLM) are an error unless --truncate.

    Examples:

      gptcli embed "The cat sat on the mat"

      cat sentences.txt | gptcli embed > vectors.jsonl

      gptcli embed --input docs.txt --output vecs.jsonl      # resumes if interrupted

      gptcli embed --input docs.jsonl --output vecs.npy      # a float32 row per record

      gptcli embed --input docs.txt --model BAAI/bge-small-en-v1.5 --truncate --stats
    """
    chosen = _format(output_format, output)
    spread.check_options(num_processes, output, None, text, input_file)
    common.check_batch_args(text, input_file, output)
    items = _read_items(text, input_file)
    load_options = _load_options(model, device, dtype, trust_remote_code, allow_pickle)
    sentence = _sentence_config(load_options.model)
    settings = common.run_settings(output, load_options.model, dtype=dtype, normalize=normalize,
                                   truncate=truncate, format=chosen)
    if settings:  # the pooling files lie in a subfolder, which the model's fingerprint does not read
        settings["--model"] += f"; {sentence or 'no sentence-transformers config'}"
    Run(_params(batch_size, normalize, truncate), batch_size == 0, True, output, stats, settings, overwrite,
        array=chosen == Format.npy, sentence_model=sentence is not None, processes=num_processes).execute(
        items, load_options)


def _format(given: Format | None, output: str | None) -> Format:
    if given is None:
        return Format.npy if output and output.lower().endswith(".npy") else Format.jsonl
    if given == Format.npy and not output:
        raise UsageError("--format npy writes a file: add --output vecs.npy (stdout takes JSON lines)")
    return given


def _params(batch_size: int, normalize: bool | None, truncate: bool):
    from gptcli.services.embed import EmbedParams

    return EmbedParams(batch_size or 1, normalize, truncate)


def _load_options(model, device, dtype, trust_remote_code, allow_pickle):
    from gptcli.models.loader import LoadOptions
    from gptcli.models.placement import DTYPES
    from gptcli.models.resolve import MINILM_ALIAS

    if dtype == "int4" or dtype not in DTYPES:  # int4 packs a causal LM's GGUF layers: no encoder has them
        raise UsageError(f"--dtype {dtype!r}: embed takes float32, auto, bfloat16 or float16")
    # `is None`, not `or`: an empty --model is an error (models.resolve), not the default.
    return LoadOptions(MINILM_ALIAS if model is None else model, device, dtype, trust_remote_code,
                       allow_pickle=allow_pickle)


def _sentence_config(model: str):
    """The model's sentence-transformers config (None without one), read before it loads (JSON only)."""
    from gptcli.models.resolve import resolve
    from gptcli.models.sentence import sentence_config

    return sentence_config(resolve(model))


def _read_items(text: str | None, input_file: str | None) -> list[Item]:
    """Texts from --input, the argument, or stdin lines (blank lines skipped; ids are line numbers)."""
    from gptcli import textio

    if text is not None and text != "-":
        if not textio.check_argument(text, "the text").strip():
            raise InputError("the text to embed is empty")
        return [Item(1, text, "the text", {})]
    if input_file is None and text is None and not textio.stdin_is_piped():
        raise UsageError("no text: give it as an argument, pipe lines on stdin, or use --input FILE")
    records = textio.read_records(input_file or "-", "text")
    return [Item(record.id, record.text("text"), record.where, {}) for record in records]


@dataclass
class Run(common.TaskRun):
    """embed: a vector for every text, written in input order."""

    array: bool = False  # --format npy: one array, written at the end
    sentence_model: bool = False  # the model has a sentence-transformers config

    command = "embed"
    unit = "text"

    def accepts(self) -> tuple[str, ...]:
        from gptcli.models.kinds import CAUSAL_LM, EMBEDDING

        # A decoder set up by sentence-transformers (lasttoken pooling: Qwen3-Embedding, e5-mistral) is an
        # embedding model by its own config; any other causal LM is refused by kind.
        return (EMBEDDING, CAUSAL_LM) if self.sentence_model else (EMBEDDING,)

    def part(self, output: str) -> "Run":
        from dataclasses import replace

        return replace(super().part(output), array=False)  # a part is records, the array is made at the merge

    def open_sink(self, run):
        if not self.array:
            return super().open_sink(run)
        from gptcli.cli.sink import ArraySink

        return ArraySink(self.output, run, overwrite=self.overwrite)

    def work(self, lm, items: list[Item], sink, clock) -> None:
        from dataclasses import replace

        from gptcli import console
        from gptcli.services.embed import EmbedStats, TextTooLong, auto_batch_size, embedding_results, recipe

        params = replace(self.params, batch_size=auto_batch_size(lm)) if self.auto_batch else self.params
        console.log(f"{lm.name}: {recipe(lm, params.normalize).describe()}, {params.batch_size} texts a batch")
        stats = EmbedStats()
        started = time.perf_counter()
        results = embedding_results(lm, [item.text for item in items], params, stats)
        try:
            common.write_results(items, results, sink, "embedding", _record, _line)
        except TextTooLong as exc:  # named by its file and line, with the way out
            raise InputError(exc.at(items[exc.index].where, "shorten it, or pass --truncate to cut it to the limit")) \
                from None
        if self.show_stats:
            console.info(common.stats_line(lm, clock, _work_text(stats, time.perf_counter() - started)))


def _record(item: Item, fields: dict) -> dict:
    return {"id": item.id, "embedding": fields["embedding"]}


def _line(fields: dict) -> str:
    """Unused: stdout takes the JSON records (the sink is told json_output), as there is no plain form."""
    return ""


def _work_text(stats, seconds: float) -> str:
    rate = stats.texts / seconds if seconds else 0.0
    return f"{stats.texts} texts, {stats.tokens} tok in {seconds:.2f} s ({rate:.1f} texts/s)"
