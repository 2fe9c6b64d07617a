"""Checkpoints: written to a temporary folder and renamed, so a kill never leaves half of one.

A checkpoint holds only the trainable weights (the adapter for LoRA), the
optimizer, the scheduler, every RNG and the training state (step, best eval,
how much of metrics.jsonl belongs to it). The data position is the step:
batches are a pure function of (seed, step), see ``recipe.Batches``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Iterator

from gptcli.errors import GptcliError

CHECKPOINTS = "checkpoints"
BEST = "best"
KEEP = 2  # the newest checkpoints kept; older ones are removed


def trainable_state(model) -> dict:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model, state: dict) -> None:
    missing = set(state) - {name for name, _ in model.named_parameters()}
    if missing:
        raise GptcliError(f"the checkpoint does not fit this model ({sorted(missing)[0]} is unknown); "
                          f"resume with the same --model and --method, or start a new --output")
    model.load_state_dict(state, strict=False)


def rng_state() -> dict:
    import numpy
    import torch

    state = {"python": random.getstate(), "numpy": numpy.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy
    import torch

    random.setstate(state["python"])
    numpy.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(out: Path, step: int, model, optimizer, scheduler, rng: dict, state: dict) -> Path:
    """Write checkpoint ``step`` atomically and prune older ones; returns its folder."""
    import torch

    root = out / CHECKPOINTS
    final = root / f"step-{step:07d}"
    with _written(root, final.name) as temp:
        torch.save(trainable_state(model), temp / "trainable.pt")
        torch.save(optimizer.state_dict(), temp / "optimizer.pt")
        torch.save(scheduler.state_dict(), temp / "scheduler.pt")
        torch.save(rng, temp / "rng.pt")
        (temp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    _replace(temp, final)
    _prune(root)
    return final


def save_best(out: Path, model, step: int) -> None:
    """The trainable weights of the best eval so far, kept apart from the rolling checkpoints."""
    import torch

    root = out / CHECKPOINTS
    with _written(root, BEST) as temp:
        torch.save(trainable_state(model), temp / "trainable.pt")
        (temp / "state.json").write_text(json.dumps({"step": step}), encoding="utf-8")
    _replace(temp, root / BEST)


def latest(out: Path) -> Path | None:
    steps = sorted((out / CHECKPOINTS).glob("step-*")) if (out / CHECKPOINTS).is_dir() else []
    return steps[-1] if steps else None


def saved_state(folder: Path) -> dict:
    """The run state a checkpoint holds (step, best eval, the run's identity ...)."""
    return json.loads((folder / "state.json").read_text(encoding="utf-8"))


def restore(folder: Path, model, optimizer, scheduler) -> dict:
    """Load a checkpoint into the model, optimizer and scheduler; set the RNGs; return the state."""
    import torch

    load_trainable(model, torch.load(folder / "trainable.pt", weights_only=True))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    set_rng_state(torch.load(folder / "rng.pt", weights_only=False))  # numpy's state is a tuple, not tensors
    return json.loads((folder / "state.json").read_text(encoding="utf-8"))


def load_best(out: Path, model) -> int | None:
    """Put the best weights back into the model; returns their step (None when there is none)."""
    import torch

    folder = out / CHECKPOINTS / BEST
    if not (folder / "trainable.pt").is_file():
        return None
    load_trainable(model, torch.load(folder / "trainable.pt", weights_only=True))
    return json.loads((folder / "state.json").read_text(encoding="utf-8"))["step"]


@contextlib.contextmanager
def _written(root: Path, name: str) -> Iterator[Path]:
    """A fresh temporary folder to write a checkpoint into; removed again if writing fails."""
    temp = _fresh_temp(root, name)
    try:
        yield temp
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
        shutil.rmtree(temp, ignore_errors=True)
        kept = latest(root.parent)
        raise GptcliError(f"cannot write checkpoint {name} in {root}: {getattr(exc, 'strerror', None) or exc}; "
                          + (f"{kept.name} is intact: free some space, then rerun with --resume"
                             if kept else "free some space and run again")) from None


def _fresh_temp(root: Path, name: str) -> Path:
    temp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    return temp


def _replace(temp: Path, final: Path) -> None:
    # A folder cannot be renamed over another: move the old one aside first, then swap.
    old = final.with_name(f".old-{final.name}-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(temp, final)
    shutil.rmtree(old, ignore_errors=True)


def _prune(root: Path) -> None:
    for folder in sorted(root.glob("step-*"))[:-KEEP]:
        shutil.rmtree(folder, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        if not stale.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(stale, ignore_errors=True)
