"""The output folder of a run: whose it is, one writer at a time, and what a rerun may do with it.

A run marks its folder with RUN_FILE as it starts, so a rerun can tell gptcli's own
partial run (safe to clear) from a folder the user filled (never touched). The same
file is the lock: ``fcntl.flock`` on it keeps a second run out while the first
writes, and it names the holder's pid for the message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

from gptcli import console
from gptcli.errors import UsageError
from gptcli.finetune import checkpoint

RUN_FILE = "gptcli-run.json"
METRICS = "metrics.jsonl"
FINAL_TEMP = ".tmp-final-"  # the final save is written here first (save.py), then renamed into place
# What a run leaves in its folder before the final save: all of it can be cleared when there is
# no checkpoint to resume from (a run killed early, or one whose final save failed).
PARTIAL = (RUN_FILE, METRICS, checkpoint.CHECKPOINTS)
# Set by our own launcher (recipe.launch) for its torchrun children: the parent holds the lock.
HELD_BY_PARENT = "GPTCLI_FINETUNE_LOCKED_OUTPUT"
FRESH, RESUME = "fresh", "resume"


def plan(out: Path, resume: bool) -> str:
    """What this run may do with ``out``: FRESH (start at step 0) or RESUME (continue a checkpoint).

    Raises:
        UsageError: a file, a folder that is not a gptcli run, or --resume with nothing to continue.
    """
    if out.is_file():
        raise UsageError(f"--output {out} is a file; give a folder name")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    kept = checkpoint.latest(out)
    if kept is not None:
        if resume:
            return RESUME
        raise UsageError(f"--output {out} is not empty: it holds a run with checkpoints (latest {kept.name}); "
                         f"add --resume to continue it, or choose a new folder")
    if RUN_FILE in entries and all(_partial(name) for name in entries):
        return FRESH  # our own run, stopped before its first checkpoint: nothing there to keep
    if entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise UsageError(f"--output {out} is not empty ({shown}) and holds no checkpoint to resume from; "
                         f"choose a new folder")
    if resume:
        raise UsageError(f"--resume: there is no run in {out} to continue; run without --resume to start one")
    return FRESH


def _partial(name: str) -> bool:
    return name in PARTIAL or name.startswith(FINAL_TEMP)


@contextlib.contextmanager
def claimed(out: Path, resume: bool) -> Iterator[str]:
    """Hold ``out`` for this run: checked, locked and a partial run cleared. Yields the plan.

    Raises:
        UsageError: another run holds the folder (naming its pid), or ``plan`` refuses it.
    """
    if os.environ.get(HELD_BY_PARENT) == str(out.resolve()):
        yield plan(out, resume)
        return
    if not (out / RUN_FILE).exists():
        plan(out, resume)  # refuse before writing anything into a folder that is not ours
    out.mkdir(parents=True, exist_ok=True)
    with open(out / RUN_FILE, "a+", encoding="utf-8") as handle:
        _lock(handle, out)
        try:
            decided = plan(out, resume)  # again, under the lock: only now is the answer certain
            if decided == FRESH:
                _clear_partial(out)
            _write_owner(handle)
            yield decided
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock(handle, out: Path) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _owner_pid(handle)
        holder = f"pid {pid}" if pid else "another process"
        raise UsageError(f"--output {out} is in use by another gptcli finetune ({holder}); wait for it to "
                         f"end, or choose another folder") from None


def _owner_pid(handle) -> int | None:
    """The pid the lock holder wrote; it writes it just after locking, so allow it a moment."""
    for _ in range(20):
        handle.seek(0)
        try:
            return int(json.loads(handle.read())["pid"])
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return None


def _write_owner(handle) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"command": "gptcli finetune", "pid": os.getpid(),
                             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    handle.flush()


def _clear_partial(out: Path) -> None:
    """Remove what a run that never reached a checkpoint left (metrics, best weights, temporaries)."""
    leftovers = [p for p in out.iterdir() if p.name != RUN_FILE and _partial(p.name)]
    for path in leftovers:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    if leftovers:
        console.info(f"{out} held a run that stopped before its first checkpoint: starting it afresh")
