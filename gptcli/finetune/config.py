"""The typed settings of one fine-tuning run, and the one function that merges them.

Settings order: command line > --config YAML > the defaults below. This module
imports nothing heavy, so the CLI can take its defaults from here.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from gptcli.errors import InputError, UsageError

METHODS = ("lora", "full")
TASKS = ("lm", "classify")
PRECISIONS = ("auto", "no", "bf16", "fp16")
SEED_LIMIT = 2**32  # accelerate's set_seed seeds numpy, which takes 0 <= seed < 2**32
# Settings without a command-line option, named as in the YAML file.
CONFIG_ONLY = ("max_grad_norm",)


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
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=_yaml_loader()) or {}
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
    for name, value in data.items():
        _check_type(name, value, path)
    return data


def _yaml_loader():
    """PyYAML's safe loader, reading ``1e-4`` as a number as YAML 1.2 does (1.1 wants ``1.0e-4``).

    A learning rate is most often written that way; read as the string '1e-4' it was refused.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    exponent = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent, list("-+0123456789"))
    return Loader


def _check_type(name: str, value: Any, path: str) -> None:
    """A YAML value must have its setting's type: ``batch_size: four`` or ``max_steps: "2"`` is refused.

    Raises:
        InputError: naming the setting, the file and the type wanted.
    """
    wanted = get_type_hints(TrainConfig)[name]
    optional = wanted not in (bool, int, float, str)  # the ``X | None`` settings
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if wanted is bool:
        ok, kind = isinstance(value, bool), "true or false"
    elif wanted is int:
        ok, kind = number and isinstance(value, int), "a whole number"
    elif float in getattr(wanted, "__args__", (wanted,)):
        ok, kind = number or (optional and value is None), "a number" + (" or null" if optional else "")
    else:
        ok = isinstance(value, str) or (optional and value is None)
        kind = "a string" + (" or null" if optional else "")
    if not ok:
        raise InputError(f"--config {path}: {name} must be {kind}, got {value!r}")


def check_config(config: TrainConfig) -> None:
    """Refuse values that cannot work, before any data is read or model loaded."""
    if not config.data:
        raise UsageError("no training data: give --data FILE (jsonl, json, csv or parquet)")
    _choice("method", config.method, METHODS)
    _choice("task", config.task, TASKS)
    _choice("mixed-precision", config.mixed_precision, PRECISIONS)
    _check_numbers(config)
    if config.max_steps <= 0 and config.epochs <= 0:
        raise UsageError("give --epochs above 0 or --max-steps above 0")
    if config.task == "classify" and config.packing:
        raise UsageError("--packing is for language modelling; drop it with --task classify")


def _check_numbers(config: TrainConfig) -> None:
    """Counts, rates and shares in their ranges; NaN and infinity are never a setting."""
    for name in ("learning_rate", "epochs", "weight_decay", "warmup", "lora_dropout", "eval_fraction",
                 "max_grad_norm"):
        value = getattr(config, name)
        if value is not None and not math.isfinite(value):
            raise UsageError(f"{_flag(name)} must be a finite number, got {value}")
    at_least_one = ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length", "num_processes")
    for name in at_least_one:
        if getattr(config, name) < 1:
            raise UsageError(f"{_flag(name)} must be at least 1, got {getattr(config, name)}")
    not_negative = ("max_steps", "epochs", "warmup", "weight_decay", "max_grad_norm", "eval_every",
                    "save_every", "log_every", "early_stopping_patience")
    for name in not_negative:
        if getattr(config, name) < 0:
            raise UsageError(f"{_flag(name)} must be 0 or more, got {getattr(config, name)}")
    if config.learning_rate <= 0:
        raise UsageError(f"--learning-rate must be above 0, got {config.learning_rate}")
    if config.eval_fraction is not None and not 0 <= config.eval_fraction < 1:
        raise UsageError(f"--eval-fraction must be in [0, 1), got {config.eval_fraction}")
    if not 0 <= config.lora_dropout < 1:
        raise UsageError(f"--lora-dropout must be in [0, 1), got {config.lora_dropout}")
    if not 0 <= config.seed < SEED_LIMIT:
        raise UsageError(f"--seed must be in [0, 2**32), got {config.seed}")


def _flag(name: str) -> str:
    """How the user gave a setting: its option, or its YAML name for settings only the file has."""
    return f"{name} (in --config)" if name in CONFIG_ONLY else "--" + name.replace("_", "-")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UsageError(f"--{name} {value!r} is not one of {', '.join(allowed)}")
