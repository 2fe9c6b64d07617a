"""`gptcli chat` at a real terminal: a pseudo-terminal driven by pexpect, keys as a user types them.

One session checks, in order: a streamed reply, a multi-line message (Esc then Enter), Ctrl-C in
the middle of a reply (the session goes on and answers the next message), /save, /reset, Ctrl-C
on a line with text (cleared) and on an empty one (a hint, no exit), the history file, and /exit.
Every wait is bounded by pexpect's timeout. Through a server: tests/test_chat.py.
"""

from __future__ import annotations

import json
import os

import pexpect
import pytest

from tests import tiny_models
from tests.conftest import gptcli_command, interruptible
from tests.server import server_env

PROMPT = ">>>"  # prompt_toolkit draws ">>> " as ">>>" and a cursor move
# prompt_toolkit turns bracketed paste off when a line is sent and on as the next prompt starts:
# what comes between is the reply (and notices).
SENT, NEXT_PROMPT = "\x1b[?2004l", "\x1b[?2004h"
WAIT = 60  # seconds any one step may take on a busy machine
# 200 new tokens take about 2 s on the tiny model: long enough to stop one midway, short enough to wait for.
MAX_NEW_TOKENS = "200"


def spawn(args: list[str], env: dict, command: list[str] | None = None) -> pexpect.spawn:
    """`gptcli ARGS` (or ``command``) in a pseudo-terminal. prompt_toolkit asks a terminal where its
    cursor is (CPR); pexpect is no terminal and would never answer, so it is told not to ask."""
    command = command or gptcli_command()
    env = dict(env, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")
    return pexpect.spawn(command[0], command[1:] + args, env=env, encoding="utf-8", timeout=WAIT,
                         dimensions=(40, 200), preexec_fn=interruptible)  # Ctrl-C must reach it


def send_line(child: pexpect.spawn, text: str) -> None:
    """Type ``text`` and Enter; return once the prompt has taken it."""
    child.send(text + "\r")
    child.expect_exact(SENT)


def until_prompt(child: pexpect.spawn) -> str:
    """What is written before the next prompt (a reply, notices)."""
    child.expect_exact(NEXT_PROMPT)
    written = child.before
    child.expect_exact(PROMPT)
    return written


@pytest.fixture(scope="module")
def long_llama(session_dir):
    """A tiny chat model with room (1024 tokens) for replies long enough to interrupt, and that never
    ends one early: a reply shorter than the time Ctrl-C takes to arrive would end before it."""
    folder = session_dir / "chat-llama-1k-never-ends"
    return folder if folder.exists() else tiny_models.build_llama(folder, context=1024, never_ends=True)


def test_a_terminal_session_streams_stops_saves_resets_and_exits(long_llama, session_dir, tmp_path):
    history = tmp_path / "state" / "chat_history"
    env = dict(server_env(session_dir), GPTCLI_CHAT_HISTORY=str(history))
    child = spawn(["chat", "-m", str(long_llama), "--dtype", "float32", "--max-new-tokens", MAX_NEW_TOKENS], env)
    try:
        child.expect_exact("Esc then Enter")  # the banner says how to write a newline
        child.expect_exact(PROMPT)
        send_line(child, "hello")
        assert until_prompt(child).strip()  # a whole reply, then the prompt again

        send_line(child, "line one\x1b\rline two")  # Esc then Enter: a new line in the same message
        child.expect(r"[^\s]")  # the reply has begun
        child.sendintr()
        assert "(reply stopped)" in until_prompt(child)

        send_line(child, "hello")  # the session survived, and answers
        assert until_prompt(child).strip()

        saved = tmp_path / "talk.jsonl"
        send_line(child, f"/save {saved}")
        assert "saved 6 messages" in until_prompt(child)
        send_line(child, "/reset")
        assert "conversation cleared" in until_prompt(child)

        child.send("half a thought")
        child.sendintr()  # at the prompt, Ctrl-C clears the line ...
        child.sendintr()  # ... and on an empty line gives a hint instead of ending the session
        assert "Ctrl-C again" in until_prompt(child)
        send_line(child, "/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before

    messages = json.loads(saved.read_text(encoding="utf-8"))["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3
    assert messages[2]["content"] == "line one\nline two"
    assert messages[3]["content"]  # the stopped reply, as far as it was shown
    typed = history.read_text(encoding="utf-8")
    assert "+line one\n+line two\n" in typed and "/reset" in typed and "half a thought" not in typed
    assert os.stat(history).st_size > 0
