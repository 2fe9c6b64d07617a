"""The two front ends of `gptcli chat`: the terminal's prompt (prompt_toolkit) and a script's lines.

In a terminal: Enter sends, Esc then Enter (Alt+Enter) starts a new line, a paste keeps its
lines; Ctrl-C stops a reply or clears the line, and at an empty prompt twice in a row ends the
session (130); Ctrl-D or /exit ends it (0). Typed lines are kept in a history file.
With stdin or stdout not a terminal: a message a line in, a reply a line out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gptcli import console, signals, textio
from gptcli.cli.chat_session import Done, Session
from gptcli.errors import GptcliError, UsageError
from gptcli.services.conversation import Reply

PROMPT = ">>> "
HISTORY_ENV = "GPTCLI_CHAT_HISTORY"
KEYS = ("Enter sends · Esc then Enter (or Alt+Enter) starts a new line · /help lists the commands · "
        "Ctrl-D or /exit quits")


def interactive() -> bool:
    """Whether the session is typed at a terminal (both ends of it one), rather than scripted."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def history_path(given: str | None) -> Path:
    """The input history: ``given`` (--history-file or $GPTCLI_CHAT_HISTORY), else
    $XDG_STATE_HOME/gptcli/chat_history, else ~/.local/state/gptcli/chat_history.

    Raises:
        UsageError: ``given`` is empty or a folder.
    """
    if given is not None:
        if not given.strip():
            raise UsageError("--history-file is empty; give a file name (or /dev/null to keep no history)")
        path = Path(given).expanduser()
        if path.is_dir():
            raise UsageError(f"--history-file {given} is a folder; give a file name")
        return path
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "gptcli" / "chat_history"


# ---------------------------------------------------------------- a script's lines


def run_lines(session: Session) -> None:
    """A message a line from stdin, its reply a line on stdout (newlines in it written as \\n, a
    backslash as \\\\); slash commands too. The first failure ends the run with its error: the lines
    after it were written for a session in which it worked."""
    for line in textio.stdin_lines():
        if not line.strip():
            continue
        outcome = session.handle(line, lambda text: textio.write_stdout(one_line(text)))
        if outcome is Done.EXIT:
            return
        if isinstance(outcome, Reply):
            if outcome.finish_reason == "cancelled":  # Ctrl-C: a script's run ends (130), its reply cut
                raise KeyboardInterrupt
            textio.write_stdout("\n")


def one_line(text: str) -> str:
    """A reply's text on one line, reversibly (`printf '%b\\n' "$line"` gives it back)."""
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


# ---------------------------------------------------------------- the terminal


def run_terminal(session: Session, history: Path, model_name: str) -> None:
    """Read, reply, repeat, at the terminal, until /exit, Ctrl-D, or Ctrl-C twice at an empty prompt."""
    prompt = _prompt_session(history)
    console.info(f"gptcli chat · {model_name} · {KEYS}")
    interrupted = False  # the last key at the prompt was Ctrl-C on an empty line
    while True:
        try:
            line = prompt.prompt(PROMPT)
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            console.info("(Ctrl-C again, Ctrl-D or /exit to quit)")
            continue
        except EOFError:  # Ctrl-D at an empty prompt
            return
        interrupted = False
        if line.strip() and _turn(session, line) is Done.EXIT:
            return


def _turn(session: Session, line: str):
    """One line's work at the terminal: its errors are said and the session goes on."""
    written: list[str] = []

    def show(text: str) -> None:
        written.append(text)
        textio.write_stdout(text)

    try:
        outcome = session.handle(line, show)
    except GptcliError as exc:
        _end_line(written)
        console.info(f"error: {exc.message}")
        return None
    except KeyboardInterrupt as exc:  # Ctrl-C before the reply began (a long conversation being encoded)
        if isinstance(exc, signals.Terminated):
            raise
        _end_line(written)
        signals.forget_interrupt()
        console.info("(stopped)")
        return None
    if isinstance(outcome, Reply):
        textio.write_stdout("\n" if "".join(written).endswith("\n") else "\n\n")  # a blank line before the prompt
        if outcome.finish_reason == "cancelled":
            signals.forget_interrupt()  # handled: a later SIGTERM must end the session as its own
            console.info("(reply stopped)")
    return outcome


def _end_line(written: list[str]) -> None:
    if written and not "".join(written).endswith("\n"):
        textio.write_stdout("\n")


def _prompt_session(history: Path):
    try:
        from prompt_toolkit import PromptSession
    except ImportError:  # a venv installed before chat came: say the fix, not "unexpected ModuleNotFoundError"
        raise GptcliError("`gptcli chat` at a terminal needs prompt_toolkit: run `make install` (or "
                          "pip install prompt_toolkit)") from None

    return PromptSession(multiline=True, key_bindings=_keys(), history=_history(history),
                         prompt_continuation=lambda width, _line, _wrap: "... ".rjust(width))


def _keys():
    """Enter sends and Esc+Enter adds a line (prompt_toolkit's multi-line mode has them the other
    way round); Ctrl-C clears a line that has text, and only on an empty one reaches the loop."""
    from prompt_toolkit.key_binding import KeyBindings

    keys = KeyBindings()

    @keys.add("enter")
    def _send(event) -> None:
        event.current_buffer.validate_and_handle()

    @keys.add("escape", "enter")
    def _new_line(event) -> None:
        event.current_buffer.insert_text("\n")

    @keys.add("c-c")
    def _clear_or_interrupt(event) -> None:
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

    return keys


def _history(path: Path):
    """A history kept in ``path``; in memory only (with a warning) where that file cannot be written."""
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        console.warn(f"cannot keep the input history in {path} ({exc.strerror}); this session's is not kept "
                     f"(set --history-file or ${HISTORY_ENV})")
        return InMemoryHistory()
    return FileHistory(str(path))
