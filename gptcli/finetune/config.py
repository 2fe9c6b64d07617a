"""The typed settings of one fine-tuning run, and the one function that merges them.

Settings order: command line > --config YAML > the defaults below. This module
imports nothing heavy, so the CLI can take its defaults from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gptcli.errors import InputError, UsageError

METHODS = ("lora", "full")
TASKS = ("lm", "classify")
PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything a run needs; saved as config.yaml in the output so it can be rerun."""

    data: str | None = None
    output: str = "finetuned"
    model: str | None = None
    eval_data: str | None = None
    eval_fraction: float | None = None  # None: 10% when there are at least 20 rows
    task: str = "lm"
    method: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    merge: bool = True
    load_in_4bit: bool = False
    train_on_prompt: bool = False
    max_length: int = 512
    packing: bool = False
    epochs: float = 3.0
    max_steps: int = 0  # 0: from --epochs
    learning_rate: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    warmup: float = 0.05  # below 1: a share of the steps; 1 or more: a step count
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    gradient_checkpointing: bool = False
    eval_every: int = 0  # 0: about ten evaluations per run
    save_every: int = 0  # 0: at every evaluation
    log_every: int = 0  # 0: about fifty lines per run
    early_stopping_patience: int = 0  # 0: off
    mixed_precision: str = "auto"
    device: str = "auto"
    num_processes: int = 1
    resume: bool = False
    trust_remote_code: bool = False
    allow_pickle: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_config(explicit: dict[str, Any], config_file: str | None) -> TrainConfig:
    """Merge command-line values (only those the user typed) over the YAML file over defaults.

    Raises:
        InputError: the YAML file is unreadable or names unknown settings.
        UsageError: a value out of range or a bad combination.
    """
    values = _read_yaml(config_file) if config_file else {}
    values.update(explicit)
    config = TrainConfig(**values)
    check_config(config)
    return config


def _read_yaml(path: str) -> dict:
    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"--config {path}: expected a mapping of setting: value")
    data = {str(key).replace("-", "_"): value for key, value in data.items()}
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"--config {path}: unknown setting {unknown[0]!r}; "
                         f"use the long option names of `gptcli finetune --help`")
    return data


def check_config(config: TrainConfig) -> None:
    """Refuse values that cannot work, before any data is read or model loaded."""
    if not config.data:
        raise UsageError("no training data: give --data FILE (jsonl, json, csv or parquet)")
    _choice("method", config.method, METHODS)
    _choice("task", config.task, TASKS)
    _choice("mixed-precision", config.mixed_precision, PRECISIONS)
    positive = {"lora-r": config.lora_r, "batch-size": config.batch_size, "grad-accum": config.grad_accum,
                "max-length": config.max_length, "num-processes": config.num_processes}
    for name, value in positive.items():
        if value < 1:
            raise UsageError(f"--{name} must be at least 1, got {value}")
    if config.learning_rate <= 0:
        raise UsageError(f"--learning-rate must be above 0, got {config.learning_rate}")
    if config.max_steps <= 0 and config.epochs <= 0:
        raise UsageError("give --epochs above 0 or --max-steps above 0")
    if config.eval_fraction is not None and not 0 <= config.eval_fraction < 1:
        raise UsageError(f"--eval-fraction must be in [0, 1), got {config.eval_fraction}")
    if not 0 <= config.lora_dropout < 1:
        raise UsageError(f"--lora-dropout must be in [0, 1), got {config.lora_dropout}")
    if config.task == "classify" and config.packing:
        raise UsageError("--packing is for language modelling; drop it with --task classify")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UsageError(f"--{name} {value!r} is not one of {', '.join(allowed)}")
