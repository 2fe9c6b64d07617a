"""SIGTERM and SIGHUP end a run the way Ctrl-C does.

A handler turns them into ``Terminated`` (a KeyboardInterrupt), so every clean-up
written for Ctrl-C — whole records kept, finetune's checkpoint saved — runs for
them too. ``__main__`` then exits with 128 + the signal's number.
"""

from __future__ import annotations

import signal

HANDLED = (signal.SIGTERM, signal.SIGHUP)

received: int | None = None  # the first signal that ended this run (SIGINT included)
# What the line on stderr says after a stop: a command that keeps no results (serve) says its own.
DEFAULT_STOP_NOTE = "results already written are kept (rerun to resume)"
stop_note = DEFAULT_STOP_NOTE


def set_stop_note(note: str) -> None:
    global stop_note
    stop_note = note


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGHUP."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def install() -> dict:
    """Handle SIGTERM and SIGHUP like Ctrl-C; note SIGINT too, for the exit code.

    Returns the handlers replaced, for ``restore`` (tests run gptcli in-process).
    """
    import threading

    global received, stop_note
    received = None
    stop_note = DEFAULT_STOP_NOTE
    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous  # handlers can only be set from the main thread (a server's workers)
    for signum in HANDLED:
        if signal.getsignal(signum) is signal.SIG_IGN:
            continue  # nohup: the user asked for this signal to be ignored
        previous[signum] = signal.signal(signum, _raise_terminated)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _note_interrupt)
    return previous


def restore(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def ignore_all() -> None:
    """Ignore SIGINT, SIGTERM and SIGHUP from now on: the process is exiting, its clean-up done."""
    import threading

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, *HANDLED):
            signal.signal(signum, signal.SIG_IGN)


def _raise_terminated(signum, frame) -> None:
    global received
    if received is not None:
        return  # already ending: let the clean-up (a checkpoint being written) finish
    received = signum
    raise Terminated(signum)


def _note_interrupt(signum, frame) -> None:
    global received
    received = received or signum
    raise KeyboardInterrupt


def forget_interrupt() -> None:
    """A Ctrl-C was handled and the run goes on (chat stopped a reply): a later signal ends the run
    as its own (a SIGTERM is otherwise ignored as "already ending")."""
    global received
    received = None


def exit_code() -> int:
    """130 for Ctrl-C, 128 + n for the other signals."""
    return 128 + (received or signal.SIGINT)


def name() -> str:
    return signal.Signals(received or signal.SIGINT).name
