"""Starting N copies of a gptcli command under torchrun, and ending them with one line.

`gptcli finetune --num-processes N` and the batch commands' `--num-processes N` both use it: the
parent checks everything first, then torchrun starts the processes (gloo on CPU, NCCL on GPUs),
each of which leaves its error in a reports folder instead of printing it; the parent prints the
first one, once. N processes failing alike would otherwise print N copies, then torchrun its own.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Callable, TypeVar

from gptcli.errors import GptcliError

# torchrun, ending quietly: we pass SIGTERM on to it (``wait_for``), it passes it to the processes,
# and then it would print a traceback of its own SignalException; when a process fails, the
# traceback of a ChildFailedError. It exits with the code of the first process that failed
# (128 + n for a signal), and the parent prints the one line (``failure``).
TORCHRUN = ("import logging, os, sys\n"
            "from torch.distributed.elastic.multiprocessing.api import SignalException\n"
            "from torch.distributed.elastic.multiprocessing.errors import ChildFailedError\n"
            "logging.getLogger('torch.distributed.elastic').setLevel(os.environ['LOGLEVEL'])\n"
            "from torch.distributed.run import main\n"
            "try:\n    main(sys.argv[1:])\n"
            "except SignalException as stop:\n    sys.exit(128 + int(stop.sigval))\n"
            "except ChildFailedError as failed:\n    code = failed.get_first_failure()[1].exitcode\n"
            "    sys.exit(code if code > 0 else 128 - code)\n")
# Set for the launched processes: the folder where each leaves its error for the parent.
LAUNCH_REPORTS = "GPTCLI_LAUNCH_REPORTS"

T = TypeVar("T")
_command_line: list[list[str]] = []  # the arguments gptcli was run with (``remember``)


def remember(argv: list[str]) -> None:
    """Keep the arguments of this run: `--num-processes N` starts N copies of the same command line."""
    _command_line[:] = [list(argv)]


def command_line() -> list[str] | None:
    """The arguments ``__main__`` ran gptcli with (None when it was called another way)."""
    return _command_line[0] if _command_line else None


def run_torchrun(processes: int, gptcli_args: list[str], env: dict, reports: Path, what: str, kept: str) -> None:
    """`python -m gptcli GPTCLI_ARGS` in ``processes`` processes on this machine; returns when all
    ended well. ``what`` names one process in the failure line ("a training process"), ``kept``
    says what a stopped run leaves.

    Raises:
        GptcliError: the first error a process left, or what its exit code says (a signal: exit 128+n).
    """
    import socket
    import subprocess

    from gptcli import console, quiet

    with socket.socket() as probe:  # a free port for the processes to meet on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-c", TORCHRUN, f"--nproc_per_node={processes}", "--master_addr=127.0.0.1",
               f"--master_port={port}", "-m", "gptcli", *gptcli_args]
    console.log("launching: torchrun " + " ".join(command[3:]))
    # torchrun's own log lines ("shutting down workers", "failed (exitcode: 1)") only with -v.
    env = {**env, LAUNCH_REPORTS: str(reports), "LOGLEVEL": "WARNING" if quiet.verbose() else "CRITICAL"}
    code = wait_for(subprocess.Popen(command, env=env))
    if code != 0:
        raise failure(reports, code, what, kept)


def failure(folder: Path, code: int, what: str, kept: str) -> GptcliError:
    """The one line for a failed launch: the first error a process left, else what the code says."""
    reports = sorted(folder.glob("error-*.txt"), key=lambda path: path.stat().st_mtime_ns)
    if reports:
        exit_code, message = reports[0].read_text(encoding="utf-8").split("\n", 1)
        error = GptcliError(message)
        error.exit_code = int(exit_code)
        return error
    if code > 128 and code - 128 in signal.valid_signals():
        error = GptcliError(f"{what} was stopped by {signal.Signals(code - 128).name}; {kept}")
    else:  # an unexpected error, which the process printed itself
        error = GptcliError(f"{what} failed (exit code {code}); see its message above")
    error.exit_code = code
    return error


def wait_for(process) -> int:
    """The launcher's exit code, once the processes have ended.

    Ctrl-C in a terminal reaches the whole process group, so torchrun already has it. SIGTERM
    and SIGHUP were sent to this process only: pass them on (torchrun forwards them to the
    processes, which stop as on Ctrl-C, keeping what they finished), then wait for it to finish.
    """
    from gptcli import signals

    try:
        return process.wait()
    except signals.Terminated as stop:
        process.send_signal(stop.signum)
        process.wait()
        raise
    except KeyboardInterrupt:
        process.wait()
        raise


def launched_process() -> bool:
    """This process was started by ``run_torchrun`` (it reports its errors to the parent)."""
    return bool(os.environ.get(LAUNCH_REPORTS)) and not os.environ.get("GPTCLI_DEBUG")


def reported(work: Callable[[], T]) -> T:
    """Run ``work`` in a launched process: an error is left for the parent, and the process ends
    without a line of its own. A signal ends it quietly too: the parent, or torchrun's exit code,
    tells. With GPTCLI_DEBUG=1 every process prints its own error, traceback and all."""
    from gptcli import signals

    try:
        return work()
    except GptcliError as exc:
        if not getattr(exc, "said_by_another", False):  # else another process failed first: its report says why
            rank = os.environ.get("RANK", "0")
            (Path(os.environ[LAUNCH_REPORTS]) / f"error-{rank}.txt").write_text(
                f"{exc.exit_code}\n{exc.message}", encoding="utf-8")
        code = exc.exit_code
    except KeyboardInterrupt:  # SIGTERM, SIGHUP too
        code = signals.exit_code()
    # Out of the except block: the error, and the frames its traceback holds (the process group's
    # threads among them), are gone before the exit; kept to the end, they abort it in C++.
    sys.exit(code)
