"""Option types shared by several commands, so each means the same everywhere."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

MODEL_PANEL = "Model"
INPUT_PANEL = "Input"
OUTPUT_PANEL = "Output"


class Truncate(str, Enum):
    left = "left"
    right = "right"


def _verbose_after_command(value: bool) -> bool:
    """`gptcli CMD ... -v`: the same as `gptcli -v CMD ...` (only switches on: the root's -v stays)."""
    if value:
        from gptcli import console, quiet

        console.set_verbose(True)
        quiet.configure(verbose=True)
    return value


VERBOSE_HELP = "Log what is loaded and why (device, dtype) to stderr, and let other libraries' warnings through."
Verbose = Annotated[bool, typer.Option(
    "--verbose", "-v", callback=_verbose_after_command, is_eager=True, help=VERBOSE_HELP)]


Model = Annotated[Optional[str], typer.Option(
    "--model", "-m", rich_help_panel=MODEL_PANEL,
    help="Model: a local folder, a .gguf file, a hub id (owner/name), or the alias smollm2 (default).")]
ClassifyModel = Annotated[Optional[str], typer.Option(
    "--model", "-m", rich_help_panel=MODEL_PANEL,
    help="Model: a local folder, a .gguf file, a hub id, or an alias: minilm (all-MiniLM-L6-v2, the default "
         "here) or smollm2.")]
Adapter = Annotated[Optional[str], typer.Option(
    rich_help_panel=MODEL_PANEL, help="A LoRA adapter folder (as written by `gptcli finetune`) to apply.")]
Device = Annotated[str, typer.Option(
    rich_help_panel=MODEL_PANEL, help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")]
Dtype = Annotated[str, typer.Option(
    rich_help_panel=MODEL_PANEL,
    help="auto, float32, bfloat16, float16 or int4. auto: bf16 on GPUs that have it, and on CPUs with native bf16. int4: a 4-bit GGUF model (like the packaged SmolLM2) kept 4-bit on the CPU, about 2x faster one-at-a-time decoding.")]
EngineOpt = Annotated[str, typer.Option(
    "--engine", rich_help_panel=MODEL_PANEL,
    help="transformers, or llama.cpp: a GGUF model run by llama.cpp on the CPU, one prompt at a time, about "
         "4x faster for a single stream; needs llama-cpp-python (README, \"Engines\").")]
TrustRemoteCode = Annotated[bool, typer.Option(
    "--trust-remote-code", rich_help_panel=MODEL_PANEL,
    help="Allow a model to run its own Python code. Off unless you trust the model.")]

AllowPickle = Annotated[bool, typer.Option(
    "--allow-pickle", rich_help_panel=MODEL_PANEL,
    help="Load weights stored as pickle files (.bin, .pt), which can run code. Off: safetensors only.")]

InputFile = Annotated[Optional[str], typer.Option(
    "--input", "-i", rich_help_panel=INPUT_PANEL,
    help="A batch file: .txt (one item per line, blank lines skipped), or records in .jsonl, .json (an array of "
         "objects) or .csv/.tsv (a header row names the fields); - for stdin.")]
TruncateOpt = Annotated[Optional[Truncate], typer.Option(
    rich_help_panel=INPUT_PANEL,
    help="Cut inputs longer than the model's context from the left or right, instead of stopping with an error.")]

OutputFile = Annotated[Optional[str], typer.Option(
    "--output", "-o", rich_help_panel=OUTPUT_PANEL,
    help="Write results as JSON lines to this file, each flushed when done; rerunning resumes where it stopped.")]
JsonOutput = Annotated[bool, typer.Option(
    "--json", rich_help_panel=OUTPUT_PANEL, help="Print one JSON object per result on stdout.")]
BatchSize = Annotated[int, typer.Option(
    min=0, rich_help_panel=OUTPUT_PANEL,
    help="Inputs run together in one batch; 0 chooses from the free memory.")]
Stats = Annotated[bool, typer.Option(
    "--stats", rich_help_panel=OUTPUT_PANEL,
    help="Print load time, time to first token, tokens/s and peak memory to stderr.")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", rich_help_panel=OUTPUT_PANEL,
    help="Replace the results in --output (a results file gptcli wrote) instead of resuming them. "
         "A file gptcli did not write is never overwritten.")]

NumProcesses = Annotated[int, typer.Option(
    min=1, rich_help_panel=OUTPUT_PANEL,
    help="Spread the inputs over N processes on this machine (a GPU each where there are GPUs), each writing "
         "a part that is merged into --output in input order; needs --output. Across machines: "
         "`accelerate launch -m gptcli ...` or torchrun, without this option.")]

Server = Annotated[Optional[str], typer.Option(
    "--server", envvar="GPTCLI_SERVER", rich_help_panel=MODEL_PANEL, show_envvar=True,
    help="Send the work to a running `gptcli serve` at this URL (e.g. http://127.0.0.1:8000) instead of loading "
         "the model here: no import or load time, the same results.")]

# Sampling: the options `gptcli generate` and `gptcli chat` share (generate's own extras stay in cli/generate.py).
SAMPLING_PANEL = "Sampling"
System = Annotated[Optional[str], typer.Option(rich_help_panel=INPUT_PANEL, help="A system prompt (chat models).")]
MaxNewTokens = Annotated[int, typer.Option(rich_help_panel=SAMPLING_PANEL, help="Most tokens to generate.")]
Temperature = Annotated[float, typer.Option(rich_help_panel=SAMPLING_PANEL, help="0 is greedy (deterministic).")]
TopP = Annotated[float, typer.Option(rich_help_panel=SAMPLING_PANEL, help="Nucleus sampling mass, in (0, 1].")]
TopK = Annotated[int, typer.Option(rich_help_panel=SAMPLING_PANEL, help="Sample from the k likeliest; 0 is off.")]
MinP = Annotated[float, typer.Option(rich_help_panel=SAMPLING_PANEL,
                                     help="Drop tokens below this share of the likeliest; 0 is off.")]
RepetitionPenalty = Annotated[float, typer.Option(rich_help_panel=SAMPLING_PANEL,
                                                  help="1 is off; 1.1-1.3 curbs loops.")]
Seed = Annotated[Optional[int], typer.Option(rich_help_panel=SAMPLING_PANEL,
                                             help="Same seed, same output: 0 to 4294967295 (2**32-1).")]
