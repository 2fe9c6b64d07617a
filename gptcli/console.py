"""The stderr side of the terminal: logs, warnings, stats and progress.

stdout is reserved for results (see ``textio``). Progress bars are drawn only
when stderr is a terminal, and colour follows NO_COLOR / the terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
from functools import lru_cache
from typing import Iterator

_verbose = False
_prefix = [""]  # put before each line: which process says it, in a run spread over several (cli.spread)
_quiet_info = [False]


def set_verbose(flag: bool) -> None:
    global _verbose
    _verbose = flag


def is_verbose() -> bool:
    return _verbose


@contextlib.contextmanager
def prefixed(prefix: str) -> Iterator[None]:
    """Lines said inside start with ``prefix`` ("process 2 of 4: ")."""
    _prefix[0] = prefix
    try:
        yield
    finally:
        _prefix[0] = ""


@contextlib.contextmanager
def without_info() -> Iterator[None]:
    """No info lines inside (a check whose findings another process will say)."""
    _quiet_info[0] = True
    try:
        yield
    finally:
        _quiet_info[0] = False


@lru_cache(maxsize=1)
def _console():
    from rich.console import Console

    # highlight=False: rich would otherwise colour numbers and paths in our logs.
    return Console(stderr=True, highlight=False, no_color=bool(os.environ.get("NO_COLOR")))


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def log(message: str) -> None:
    """An informational line, shown only with --verbose."""
    if _verbose:
        _print(message, "dim")


def info(message: str) -> None:
    """A line the user should always see (stats, summaries)."""
    if not _quiet_info[0]:
        _print(message, None)


def warn(message: str) -> None:
    _print(f"warning: {message}", "yellow")


def _print(message: str, style: str | None) -> None:
    message = _prefix[0] + message
    try:
        if stderr_is_terminal():
            _console().print(message, style=style, markup=False, soft_wrap=True)
        else:
            # Plain write: no rich wrapping or control codes in logs that go to files.
            sys.stderr.write(message + "\n")
            sys.stderr.flush()
    except OSError:  # stderr on a full disk: a lost log line must not fail a run whose results are fine
        pass


class Progress:
    """A progress bar on a terminal; silent otherwise."""

    def __init__(self, description: str, total: int):
        self._bar = None
        self._task = None
        # Of the processes of a spread run (cli.spread) only the first draws one: N bars would fight.
        if stderr_is_terminal() and total > 1 and os.environ.get("RANK", "0") == "0":
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress,
                                       TextColumn, TimeRemainingColumn)

            self._bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=_console(), transient=True,
                                     # rich would otherwise capture stdout and print results on stderr
                                     redirect_stdout=False, redirect_stderr=False)
            self._task = self._bar.add_task(description, total=total)

    def advance(self, steps: int = 1, description: str | None = None) -> None:
        """Move the bar on; ``description`` replaces the text before it (e.g. the latest loss)."""
        if self._bar is not None:
            self._bar.update(self._task, advance=steps,
                             **({"description": description} if description is not None else {}))

    def __enter__(self) -> "Progress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextlib.contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner while something slow happens (model loading), on a terminal only."""
    if stderr_is_terminal():
        with _console().status(message):
            yield
    else:
        log(message)
        yield
