"""`/image` in `gptcli chat`, at a real terminal (a pseudo-terminal driven by pexpect, as in
tests/test_chat_pty.py): an image attached to the next message gives the reply `gptcli generate
--image` gives; later turns still see it; /save writes image_url parts that generate and /load
read; a bad image or a text-only model is one error line, and the session goes on.

Every wait is bounded by pexpect's timeout (WAIT) or subprocess's.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pexpect
import pytest

from tests.conftest import gptcli_command
from tests.server import server_env

PROMPT = ">>>"
# prompt_toolkit turns bracketed paste off when a line is sent and on as the next prompt starts:
# what comes between is the reply (and notices).
SENT, NEXT_PROMPT = "\x1b[?2004l", "\x1b[?2004h"
WAIT = 60  # seconds any one step may take on a busy machine
NEW_TOKENS = ["--max-new-tokens", "12"]  # chat's default (512) and generate's (256) differ: the same for both


@pytest.fixture
def pictures(tmp_path) -> Path:
    """A folder holding red.png (40x30) and blue.png (28x28): the sessions and generate run in it."""
    from PIL import Image

    Image.new("RGB", (40, 30), (220, 30, 30)).save(tmp_path / "red.png")
    Image.new("RGB", (28, 28), (30, 30, 220)).save(tmp_path / "blue.png")
    return tmp_path


def _spawn(model: Path, folder: Path, session_dir: Path) -> pexpect.spawn:
    """`gptcli chat` in a pseudo-terminal, in ``folder``. prompt_toolkit would ask the terminal where
    its cursor is (CPR), which pexpect never answers: it is told not to ask."""
    command = gptcli_command()
    env = dict(server_env(session_dir), PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm")
    args = ["chat", "-m", str(model), "--dtype", "float32", *NEW_TOKENS, "--history-file", "/dev/null"]
    child = pexpect.spawn(command[0], command[1:] + args, env=env, cwd=str(folder), encoding="utf-8", timeout=WAIT,
                          dimensions=(40, 400))
    child.expect_exact(PROMPT)
    return child


def _said(child: pexpect.spawn, line: str) -> str:
    """Type ``line`` and Enter; what is written before the next prompt, newlines as \\n."""
    child.send(line + "\r")
    child.expect_exact(SENT)
    child.expect_exact(NEXT_PROMPT)
    written = child.before
    child.expect_exact(PROMPT)
    return written.replace("\r\n", "\n")


def _exit(child: pexpect.spawn) -> None:
    try:
        child.send("/exit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before


def _generate(args: list[str], folder: Path, session_dir: Path) -> str:
    """What `gptcli generate ARGS` prints (greedy, as chat's default), its one trailing newline off."""
    done = subprocess.run(gptcli_command() + ["generate", *args, "--dtype", "float32", *NEW_TOKENS], cwd=folder,
                          env=server_env(session_dir), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout[:-1]


def test_an_attached_image_goes_with_the_next_message_and_stays_in_the_conversation(tiny_llava, pictures,
                                                                                    session_dir):
    child = _spawn(tiny_llava, pictures, session_dir)
    try:
        assert "attached red.png (40x30); it goes with your next message" in _said(child, "/image red.png")
        first = _said(child, "what is in it")
        assert "attached blue.png (28x28); it goes" in _said(child, "/image blue.png")
        assert "attached red.png (40x30); 2 images go" in _said(child, "/image red.png")
        second = _said(child, "and these")
        assert "saved 4 messages" in _said(child, "/save talk.jsonl")
        assert "loaded 4 messages" in _said(child, "/load talk.jsonl")  # its images read and checked again
    finally:
        _exit(child)

    # The first turn is the prompt generate --image makes: the image, then the text, in one user message.
    alone = _generate(["--model", str(tiny_llava), "--image", "red.png", "what is in it"], pictures, session_dir)
    assert first.startswith(alone), (first, alone)
    messages = json.loads((pictures / "talk.jsonl").read_text(encoding="utf-8"))["messages"]
    assert messages[0]["content"] == [{"type": "image_url", "image_url": {"url": "red.png"}},
                                      {"type": "text", "text": "what is in it"}]
    assert [part.get("image_url", {}).get("url") for part in messages[2]["content"]] == ["blue.png", "red.png", None]
    # The second turn saw the first turn's image too: it is the reply generate gives to the saved turns before it.
    (pictures / "upto.jsonl").write_text(json.dumps({"messages": messages[:3]}) + "\n", encoding="utf-8")
    again = _generate(["--model", str(tiny_llava), "--input", "upto.jsonl"], pictures, session_dir)
    assert second.startswith(again) and messages[3]["content"] == again, (second, again)


def test_a_bad_image_or_none_is_one_error_line_and_the_session_goes_on(tiny_llava, pictures, session_dir):
    (pictures / "notes.png").write_text("not an image", encoding="utf-8")
    child = _spawn(tiny_llava, pictures, session_dir)
    try:
        for line, said in [("/image missing.png", "error: /image missing.png: no such file"),
                           ("/image notes.png", "error: /image notes.png: not an image"),
                           ("/image", "error: /image needs an image's path or http(s) URL")]:
            written = _said(child, line)
            assert said in written and len(written.strip().splitlines()) == 1, written
        assert _said(child, "hello").strip()  # answered, with nothing attached
        _said(child, "/save talk.jsonl")
    finally:
        _exit(child)
    messages = json.loads((pictures / "talk.jsonl").read_text(encoding="utf-8"))["messages"]
    assert messages[0] == {"role": "user", "content": "hello"}


def test_a_text_only_model_says_an_image_text_to_text_model_is_needed(tiny_llama, pictures, session_dir):
    child = _spawn(tiny_llama, pictures, session_dir)
    try:
        written = _said(child, "/image red.png")
        assert "reads text only" in written and "image-text-to-text model" in written, written
        assert len(written.strip().splitlines()) == 1 and "attached" not in written
        assert _said(child, "hello").strip()
        _said(child, "/save talk.jsonl")
    finally:
        _exit(child)
    messages = json.loads((pictures / "talk.jsonl").read_text(encoding="utf-8"))["messages"]
    assert messages[0] == {"role": "user", "content": "hello"}  # nothing was attached


class _Seeing:
    """A replier that sees images (decodes each one in the conversation, as the model's processor
    would) and answers "ok", or fails once when told to: the session's logic, with no model."""

    model_name = "seeing"
    takes_images = True

    def __init__(self):
        self.fail = False

    def reply(self, conversation, turn, on_text, on_note):
        from gptcli.errors import GptcliError
        from gptcli.services.conversation import Reply, split_images

        for image in split_images(conversation.messages())[1]:
            image.pixels()
        if self.fail:
            self.fail = False
            raise GptcliError("the model failed")
        return Reply("ok", "stop")


def test_a_failed_message_keeps_its_images_attached_and_a_saved_chat_reloads_them(pictures, monkeypatch):
    from gptcli.cli.chat_session import Session
    from gptcli.errors import GptcliError, InputError
    from gptcli.services.conversation import Conversation, to_record

    monkeypatch.chdir(pictures)
    session = Session(_Seeing(), Conversation(), 8)
    session.handle("/image 'red.png'", print)  # quoted, as a terminal's drag and drop may give it
    session.replier.fail = True
    with pytest.raises(GptcliError):
        session.handle("what is it", print)
    assert len(session.attached) == 1 and session.conversation.turns == []
    session.handle("what is it", print)
    assert session.attached == [] and session.conversation.turns[0]["content"][0]["source"] == "red.png"
    session.handle("/save talk.jsonl", print)
    (pictures / "red.png").unlink()  # the session keeps the image's bytes: later turns do not need the file
    session.handle("more", print)
    with pytest.raises(InputError, match="red.png: no such file"):  # a reloaded chat checks its images again
        Session(_Seeing(), Conversation(), 8).handle("/load talk.jsonl", print)
    remote = Session(object(), Conversation(), 8)  # a server that does not say it takes images
    with pytest.raises(InputError, match="does not take images"):
        remote.handle("/image blue.png", print)
    assert to_record(session.conversation)["messages"][0]["content"][1] == {"type": "text", "text": "what is it"}
