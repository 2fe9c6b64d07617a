"""The lines every benchmark report ends with: when, which commit, which machine and versions.

A figure without them cannot be compared with a later run, so each report writes them the same way.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout.strip()


def stamp() -> str:
    """Date and commit, flagging uncommitted changes to the code measured (gptcli/)."""
    dirty = _git("status", "--porcelain", "--", "gptcli")
    return (f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; commit "
            f"{_git('rev-parse', '--short', 'HEAD')}{' + uncommitted changes under gptcli/' if dirty else ''}")


def machine() -> str:
    import torch

    return (f"machine: {platform.machine()} {platform.processor() or ''}".rstrip() +
            f", {os.cpu_count()} CPU cores, {'CUDA' if torch.cuda.is_available() else 'no GPU'}; "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; niceness {os.nice(0)}; "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def versions(*extra: str) -> str:
    import torch
    import transformers

    return ", ".join([f"versions: python {platform.python_version()}", f"torch {torch.__version__}",
                      f"transformers {transformers.__version__}", *extra])
