"""`gptcli chat` from a script: a message a line in, a reply a line out, slash commands, the
conversation fitted to the context, /save files that `gptcli generate --input` reads, and the
same session through a real `gptcli serve` (the client importing no torch).

The terminal side (prompt_toolkit in a pseudo-terminal) is tests/test_chat_pty.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gptcli.cli.chat_session import Done, Session
from gptcli.errors import InputError, UsageError
from gptcli.services.conversation import Conversation, Reply, fit_conversation, from_record, to_record
from tests.conftest import gptcli_command
from tests.server import running_server, server_env
from tests.server.test_commands_via_server import NO_TORCH

LONG = "the cat sat on the mat and the dog ran to the big red house"
# greedy, --max-new-tokens 8 on tiny-llama (a context of 128 tokens): the four LONG turns outgrow it
SCRIPT = ["hello there", "hello there", "/reset", "hello there", "/save {dir}/first.jsonl", "/system be brief",
          LONG, LONG, LONG, LONG, "/save {dir}/last.jsonl", "/exit", "never read"]
REPLIES = 7


def _script(folder) -> str:
    return "".join(line.format(dir=folder) + "\n" for line in SCRIPT)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    folder: Path


@pytest.fixture(scope="module")
def both(tiny_llama, session_dir, tmp_path_factory):
    """The script through a local `gptcli chat` with stdin a pipe, and a `gptcli serve` of the same
    model, started together (each spends seconds importing torch)."""
    folder = tmp_path_factory.mktemp("chat-local")
    command = gptcli_command() + ["chat", "-m", str(tiny_llama), "--dtype", "float32", "--max-new-tokens", "8"]
    local = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=server_env(session_dir))
    try:
        with running_server(["--model", tiny_llama, "--dtype", "float32"], session_dir) as process:
            stdout, stderr = local.communicate(_script(folder), timeout=180)
            yield Run(local.returncode, stdout, stderr, folder), process
    finally:
        local.kill()
        local.wait(10)


@pytest.fixture(scope="module")
def local_run(both) -> Run:
    return both[0]


@pytest.fixture(scope="module")
def server(both):
    return both[1]


def test_a_scripted_chat_answers_each_line_on_one_line_in_order(local_run):
    done = local_run
    assert done.returncode == 0, done.stderr
    replies = done.stdout.split("\n")
    assert replies[-1] == "" and len(replies) - 1 == REPLIES  # one line each, /exit read no further
    first, second, after_reset = replies[:3]
    assert second != first  # the second "hello there" was answered with the first turn in view
    assert after_reset == first  # /reset: the same message on a fresh history, the same greedy reply
    assert "conversation cleared" in done.stderr


def test_a_conversation_that_outgrows_the_context_drops_its_oldest_turns(local_run):
    done, folder = local_run, local_run.folder
    assert "the conversation outgrew the model's context" in done.stderr
    assert "(the system prompt stays)" in done.stderr
    assert all(done.stdout.split("\n")[3:REPLIES])  # and every message still got its reply
    kept = json.loads((folder / "last.jsonl").read_text(encoding="utf-8"))["messages"]
    assert kept[0] == {"role": "system", "content": "be brief"}
    users = [m["content"] for m in kept if m["role"] == "user"]
    assert users and len(users) < 4 and set(users) == {LONG}  # the oldest went; the newest are kept


def test_save_writes_a_messages_record_that_generate_reads(local_run, cli, tiny_llama):
    done, folder = local_run, local_run.folder
    saved = (folder / "first.jsonl").read_text(encoding="utf-8")
    assert saved.count("\n") == 1
    messages = json.loads(saved)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"] == done.stdout.split("\n")[2]  # the reply as it was printed (no newlines in it)
    result = cli("generate", "--input", folder / "first.jsonl", "-m", tiny_llama, "--dtype", "float32",
                 "--max-new-tokens", "4", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["messages"] == messages


BAD_OPTIONS = [(["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
               (["--temperature", "-1"], "--temperature"),
               (["--server", "http://127.0.0.1:9", "--dtype", "float32"], "--dtype does not apply with --server")]


def test_bad_options_stop_before_the_model_loads_and_a_model_without_a_chat_template_is_refused(cli, tiny_gpt2):
    for args, said in BAD_OPTIONS:  # -m names no model: it never loads
        result = cli("chat", "-m", "/no/such/model", *args, input="hello\n")
        assert result.exit_code == 2 and said in result.stderr, result.stderr
    result = cli("chat", "-m", tiny_gpt2, input="hello\n")
    assert result.exit_code == 2 and "has no chat template" in result.stderr and result.stdout == ""


# ---------------------------------------------------------------- through a server


def test_a_chat_through_the_server_replies_as_locally_and_fits_the_context(server, local_run, tmp_path,
                                                                           session_dir):
    done = subprocess.run([sys.executable, "-c", NO_TORCH, "chat", "--server", server.url, "--max-new-tokens", "8"],
                          input=_script(tmp_path), capture_output=True, text=True, timeout=120,
                          env=server_env(session_dir))
    assert done.returncode == 0, done.stderr
    replies = done.stdout.split("\n")
    assert len(replies) - 1 == REPLIES
    assert replies[:3] == local_run.stdout.split("\n")[:3]  # greedy: the server's replies are the local ones
    assert "the conversation outgrew the model's context: dropped the oldest" in done.stderr


def test_at_a_terminal_through_the_server_ctrl_c_twice_ends_with_130_and_ctrl_d_with_0(server, session_dir,
                                                                                        tmp_path):
    import pexpect

    from tests.test_chat_pty import PROMPT, send_line, spawn, until_prompt

    env = dict(server_env(session_dir), GPTCLI_CHAT_HISTORY=str(tmp_path / "history"))
    client = [sys.executable, "-c", NO_TORCH]
    child = spawn(["chat", "--server", server.url, "--max-new-tokens", "8"], env, client)
    try:
        child.expect_exact(PROMPT)
        send_line(child, "hello there")
        assert until_prompt(child).strip()
        child.sendintr()
        assert "Ctrl-C again" in until_prompt(child)
        child.sendintr()
        child.expect_exact("interrupted")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130
    child = spawn(["chat", "--server", server.url], env, client)
    try:
        child.expect_exact(PROMPT)
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before


# ---------------------------------------------------------------- the session, without a model


class Echo:
    """A replier that answers with the number of messages it saw (and can be stopped at once)."""

    model_name = "echo"

    def __init__(self, finish_reason: str = "eos", text: str | None = None):
        self.finish_reason, self.text = finish_reason, text

    def reply(self, conversation, turn, on_text, on_note) -> Reply:
        text = self.text if self.text is not None else f"{len(conversation.messages())} messages"
        on_text(text)
        return Reply(text, self.finish_reason)


def test_save_refuses_a_file_gptcli_did_not_write_and_load_continues_a_saved_one(tmp_path):
    session = Session(Echo(), Conversation("be brief"), 8)
    session.handle("hello\nthere", lambda _text: None)
    theirs = tmp_path / "notes.jsonl"
    theirs.write_text("my own notes\n", encoding="utf-8")
    with pytest.raises(UsageError, match="was not written by `gptcli chat`"):
        session.handle(f"/save {theirs}", print)
    assert theirs.read_text(encoding="utf-8") == "my own notes\n"
    ours = tmp_path / "talk.jsonl"
    assert session.handle(f"/save {ours}", print) is Done.COMMAND
    session.handle("again", lambda _text: None)
    session.handle(f"/save {ours}", print)  # its own file: replaced
    record = json.loads(ours.read_text(encoding="utf-8"))
    assert record == to_record(session.conversation) and record["messages"][1]["content"] == "hello\nthere"
    other = Session(Echo(), Conversation(), 8)
    other.handle(f"/load {ours}", print)
    assert other.conversation.messages() == session.conversation.messages() and other.turn == 2


def test_slash_commands_reset_escape_and_refuse_unknown_ones():
    session = Session(Echo(), Conversation(), 8)
    session.handle("//etc is a folder", lambda _text: None)
    assert session.conversation.turns[0] == {"role": "user", "content": "/etc is a folder"}
    session.handle("/system  be\nbrief ", print)
    assert session.conversation.system == "be\nbrief"
    session.handle("/reset", print)
    assert session.conversation.messages() == [{"role": "system", "content": "be\nbrief"}] and session.turn == 0
    with pytest.raises(UsageError, match="unknown command /nope"):
        session.handle("/nope", print)
    with pytest.raises(UsageError, match="needs a file name"):
        session.handle("/save", print)
    assert session.handle("/EXIT", print) is Done.EXIT


def test_a_reply_stopped_before_any_text_takes_its_message_back():
    session = Session(Echo("cancelled", ""), Conversation(), 8)
    session.handle("hello", print)
    assert session.conversation.turns == []
    session.replier = Echo("cancelled", "half a rep")
    session.handle("hello", print)
    assert [t["role"] for t in session.conversation.turns] == ["user", "assistant"]


def test_fitting_drops_the_oldest_turns_keeps_the_system_prompt_and_refuses_a_message_too_long_alone():
    def encode(messages):  # a token a character
        return [0] * sum(len(m["content"]) for m in messages)

    conversation = Conversation("s" * 10)
    for text in ("a" * 30, "b" * 30, "c" * 20):
        conversation.add("user", text)
        conversation.add("assistant", text.upper())
    conversation.add("user", "d" * 10)
    fitted = fit_conversation(conversation, encode, 100, 20)  # 10 + 160 + 10 tokens, 20 kept for the reply
    assert [t["content"][0] for t in conversation.turns] == ["c", "C", "d"]
    assert len(fitted.ids) == 60 and fitted.max_new_tokens == 20 and "dropped the oldest 2 turns" in fitted.notes[0]
    conversation.add("assistant", "D" * 10)
    conversation.add("user", "e" * 95)
    with pytest.raises(InputError, match="this message is 105 tokens"):
        fit_conversation(conversation, encode, 100, 20)
    assert [t["content"][0] for t in conversation.turns] == ["c", "C", "d", "D", "e"]  # nothing dropped for it


def test_a_loaded_record_is_checked_message_by_message():
    assert from_record({"messages": [{"role": "user", "content": "hi"}]}, "f:1").turns == [
        {"role": "user", "content": "hi"}]
    for bad, said in [({}, "needs a field 'messages'"),
                      ({"messages": [{"role": "tool", "content": "x"}]}, "role 'tool'"),
                      ({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}]},
                       "only the first"),
                      ({"messages": [{"role": "user", "content": 3}]}, "string 'content'")]:
        with pytest.raises(InputError, match=said):
            from_record(bad, "f:1")
