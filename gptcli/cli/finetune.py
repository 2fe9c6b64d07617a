"""`gptcli finetune`: your data file in, a model the other commands load out."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from gptcli.cli import options as opt
from gptcli.finetune.config import TrainConfig

DATA, METHOD, TRAINING, EVAL, RUN = "Data", "Method", "Training", "Evaluation and checkpoints", "Hardware and run"
D = TrainConfig()  # the defaults shown in --help are the dataclass's own


def _opt(panel: str, help: str, *names: str, **kwargs):
    return typer.Option(*names, rich_help_panel=panel, help=help, **kwargs)


def finetune(
    ctx: typer.Context,
    data: Annotated[Optional[str], _opt(DATA, "Training data: .jsonl, .json, .csv or .parquet (or a hub dataset name). "
                    "Rows hold text; prompt+completion; messages (chat); or instruction[+input]+output. "
                    "With --task classify: text+label.", "--data", "-d")] = None,
    eval_data: Annotated[Optional[str], _opt(DATA, "A separate eval file, in the same format.")] = None,
    eval_fraction: Annotated[Optional[float], _opt(DATA, "Share of --data held out for eval when there is no "
                             "--eval-data; unset: 0.1 when there are 20 rows or more, else none.")] = None,
    inspect: Annotated[bool, _opt(DATA, "Print the first examples as the model sees them, loss-carrying tokens "
                       "in [[ ]], and exit.", "--inspect")] = False,
    train_on_prompt: Annotated[bool, _opt(DATA, "Take loss on prompts and user turns too, not only on "
                               "completions and assistant turns.", "--train-on-prompt")] = D.train_on_prompt,
    max_length: Annotated[int, _opt(DATA, "Most tokens per example; longer rows are cut (and counted).")] = D.max_length,
    packing: Annotated[bool, _opt(DATA, "Pack short examples into --max-length sequences. Examples never attend to "
                       "each other: position ids restart per example, which transformers turns into a "
                       "block-diagonal mask (models built on its masking utilities, e.g. Llama, GPT-2).",
                       "--packing")] = D.packing,
    model: opt.Model = None,
    task: Annotated[str, _opt(METHOD, "lm (language modelling) or classify (a classification head, "
                    "text+label rows; e.g. an embedding model).")] = D.task,
    method: Annotated[str, _opt(METHOD, "lora (an adapter; the base stays frozen) or full (every weight).")] = D.method,
    lora_r: Annotated[int, _opt(METHOD, "LoRA rank.")] = D.lora_r,
    lora_alpha: Annotated[int, _opt(METHOD, "LoRA scale (alpha / r multiplies the update).")] = D.lora_alpha,
    lora_dropout: Annotated[float, _opt(METHOD, "Dropout on LoRA's input.")] = D.lora_dropout,
    merge: Annotated[bool, _opt(METHOD, "LoRA: also write the adapter merged into a full model.",
                     "--merge/--no-merge")] = D.merge,
    load_in_4bit: Annotated[bool, _opt(METHOD, "QLoRA: a frozen 4-bit base (CUDA and bitsandbytes only).",
                            "--load-in-4bit")] = D.load_in_4bit,
    epochs: Annotated[float, _opt(TRAINING, "Passes over the training data.")] = D.epochs,
    max_steps: Annotated[int, _opt(TRAINING, "Optimizer steps; above 0 it replaces --epochs.")] = D.max_steps,
    learning_rate: Annotated[float, _opt(TRAINING, "Peak learning rate (1e-5 to 5e-5 suits --method full).",
                             "--learning-rate", "--lr")] = D.learning_rate,
    batch_size: Annotated[int, _opt(TRAINING, "Examples per process per micro-batch.")] = D.batch_size,
    grad_accum: Annotated[int, _opt(TRAINING, "Micro-batches per optimizer step.")] = D.grad_accum,
    warmup: Annotated[float, _opt(TRAINING, "Warmup: below 1 a share of the steps, else a step count.")] = D.warmup,
    weight_decay: Annotated[float, _opt(TRAINING, "AdamW weight decay.")] = D.weight_decay,
    seed: Annotated[int, _opt(TRAINING, "Seed for data order, held-out split and initial adapter weights.")] = D.seed,
    gradient_checkpointing: Annotated[bool, _opt(TRAINING, "Recompute activations: less memory, about 30% slower.",
                                      "--gradient-checkpointing")] = D.gradient_checkpointing,
    eval_every: Annotated[int, _opt(EVAL, "Evaluate every N steps, and after the last; 0: about ten "
                                            "evaluations per run (every total/10 steps).")] = D.eval_every,
    save_every: Annotated[int, _opt(EVAL, "Checkpoint every N steps; 0: at evaluations, but at most once every "
                                           "2 minutes. Ctrl-C, SIGTERM and SIGHUP always save one.")] = D.save_every,
    log_every: Annotated[int, _opt(EVAL, "Print a progress line every N steps; 0: about 50 lines per "
                                          "run.")] = D.log_every,
    early_stopping_patience: Annotated[int, _opt(EVAL, "Stop after N evaluations without a better eval loss; "
                                       "0 is off.")] = D.early_stopping_patience,
    output: Annotated[str, _opt(EVAL, "The output folder: new, empty, or one of gptcli finetune's own "
                      "(a run stopped before its first checkpoint starts again; with checkpoints, add --resume).",
                      "--output", "-o")] = D.output,
    resume: Annotated[bool, _opt(EVAL, "Continue from the latest checkpoint in --output.", "--resume")] = D.resume,
    config: Annotated[Optional[str], _opt(RUN, "A YAML file of settings (long option names); options given "
                      "here override it. Each run saves its own as OUT/config.yaml.")] = None,
    device: opt.Device = D.device,
    mixed_precision: Annotated[str, _opt(RUN, "auto (bf16, or fp16, on GPUs; none on CPU), no, bf16 or fp16.")]
    = D.mixed_precision,
    num_processes: Annotated[int, _opt(RUN, "Train in N processes (data parallel: GPUs, or CPU with gloo). "
                             "`accelerate launch -m gptcli finetune ...` also works.")] = D.num_processes,
    trust_remote_code: opt.TrustRemoteCode = D.trust_remote_code,
    allow_pickle: opt.AllowPickle = D.allow_pickle,
    verbose: opt.Verbose = False,
) -> None:
    """Fine-tune a model on your data (LoRA or full), and write a model the other commands load.

    Examples:

      gptcli finetune --data examples/chat.jsonl --output my-model --max-steps 60

      gptcli finetune --data train.jsonl --inspect

      gptcli generate --model my-model "What does Brightleaf sell?"

      gptcli finetune --task classify --data reviews.jsonl --model ./minilm --method full -o clf

      gptcli finetune --config train.yaml --learning-rate 1e-4 --resume
    """
    from gptcli.finetune.config import resolve_config
    from gptcli.finetune.recipe import run

    explicit = {name: value for name, value in ctx.params.items()
                if name not in ("config", "inspect", "verbose") and _typed(ctx, name)}
    run(resolve_config(explicit, config), inspect=inspect)


def _typed(ctx: typer.Context, name: str) -> bool:
    """True when the user gave this option (so it overrides --config), not its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
