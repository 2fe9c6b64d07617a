"""One `gptcli chat` session: messages to replies, and the slash commands, for both front ends
(the terminal's prompt and a script's lines: ``cli.chat_repl``).

Replies come from a replier (``services.chat.LocalChat`` or ``cli.chat_remote.RemoteChat``); the
conversation and its file format are ``services.conversation``'s. Notices go to stderr.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

from gptcli import console
from gptcli.errors import InputError, UsageError
from gptcli.services.conversation import (Conversation, Reply, from_record, image_part, read_kept_image, to_record,
                                          with_images)

HELP = """commands:
  /system TEXT   set the system prompt (from the next reply on); /system alone shows it
  /image PATH    attach an image (a path or an http(s) URL) to your next message, again for more
                 (needs an image-text-to-text model; the later turns still see it)
  /reset         forget the conversation and any attached images (the system prompt stays)
  /save FILE     write the conversation as one `messages` record (.jsonl) that `gptcli generate --input FILE` reads
  /load FILE     continue a conversation from such a file
  /exit          end the session (also /quit, or Ctrl-D)
  /help          this list
  //TEXT         send a message that starts with /"""


class Done(Enum):
    """What a line that got no reply did."""

    COMMAND = "command"
    EXIT = "exit"


@dataclass
class Session:
    """The conversation so far and what replies to it. ``turn`` numbers the replies since the last
    /reset (a seeded reply follows from the seed and its turn). ``attached``: the image parts /image
    added, which go with the next message."""

    replier: object
    conversation: Conversation
    max_new_tokens: int
    turn: int = 0
    attached: list[dict] = field(default_factory=list)

    def handle(self, line: str, on_text: Callable[[str], None]) -> Reply | Done:
        """A line as typed: a slash command, or a message to reply to (its text to ``on_text``).

        Raises:
            UsageError: an unknown command or a missing argument; InputError, GptcliError: from the
                command or the reply (the conversation is as it was before the line).
        """
        if line.startswith("/") and not line.startswith("//"):
            return self._command(*_split(line))
        return self.say(line[1:] if line.startswith("//") else line, on_text)

    def say(self, text: str, on_text: Callable[[str], None]) -> Reply:
        """The reply to ``text``, kept in the conversation with it (a reply stopped before any text is
        not, nor is its message: a template may want user and assistant turns to alternate). The
        attached images go with it; a message taken back leaves them attached, for the next one."""
        self.turn += 1
        self.conversation.add("user", with_images(text, self.attached))
        try:
            reply = self.replier.reply(self.conversation, self.turn, on_text, console.warn)
        except BaseException:
            self.conversation.undo_user_message()
            raise
        if reply.text or reply.finish_reason != "cancelled":
            self.conversation.add("assistant", reply.text)
            self.attached.clear()
        else:
            self.conversation.undo_user_message()
        if reply.finish_reason == "length":
            console.warn(f"the reply stopped at its token limit ({reply.generated_tokens} new tokens; "
                         f"--max-new-tokens {self.max_new_tokens}); raise it for longer replies")
        return reply

    def _command(self, name: str, argument: str) -> Done:
        if name in ("/exit", "/quit"):
            return Done.EXIT
        command = self._COMMANDS.get(name)
        if command is None:
            raise UsageError(f"unknown command {name}; /help lists the commands (start a message with // "
                             f"to send one that begins with /)")
        command(self, argument)
        return Done.COMMAND

    def _help(self, _argument: str) -> None:
        console.info(HELP)

    def _system(self, argument: str) -> None:
        if not argument:
            console.info(f"system prompt: {self.conversation.system!r}" if self.conversation.system
                         else "no system prompt (set one with /system TEXT)")
            return
        self.conversation.system = argument
        console.info("system prompt set; it applies from the next reply on")

    def _image(self, argument: str) -> None:
        """Attach an image to the next message, checked now: a bad one is refused here, not at the reply."""
        source = _unquoted(argument)
        if not source:
            raise UsageError("/image needs an image's path or http(s) URL, e.g. /image photo.png")
        if why := self._no_images():  # said before reading: nothing is attached
            raise InputError(f"/image: {why}")
        image = read_kept_image(source, "/image")
        self.attached.append(image_part(source, image))
        width, height = image.pixels().size
        goes = "it goes" if len(self.attached) == 1 else f"{len(self.attached)} images go"
        console.info(f"attached {image.name} ({width}x{height}); {goes} with your next message")

    def _no_images(self) -> str | None:
        """Why the replier cannot see images, or None where it can: a text-only model, or a server that
        does not say it takes them (a gptcli serve older than images)."""
        takes = getattr(self.replier, "takes_images", None)
        if takes is None:
            return "this server does not take images (an older gptcli serve?); update it, or drop --server"
        if not takes:
            from gptcli.models.kinds import VISION_MODELS_HINT

            return (f"{self.replier.model_name} reads text only; images need {VISION_MODELS_HINT} "
                    f"(gptcli chat --model NAME)")
        return None

    def _reset(self, _argument: str) -> None:
        self.conversation.reset()
        self.turn = 0
        images = " and the attached images" if self.attached else ""
        self.attached.clear()
        console.info(f"conversation{images} cleared" + (" (the system prompt stays)" if self.conversation.system
                                                         else ""))

    def _save(self, argument: str) -> None:
        from gptcli.outputs import RunRecord, save_whole

        path = _file_argument("/save", argument)
        messages = self.conversation.messages()
        if not messages:
            raise UsageError("/save: the conversation is empty; there is nothing to save yet")
        run = RunRecord("chat", {"--model": self.replier.model_name})
        save_whole(path, json.dumps(to_record(self.conversation), ensure_ascii=False) + "\n", run)
        console.info(f"saved {len(messages)} messages to {path} (`gptcli generate --input {path}` reads it)")

    def _load(self, argument: str) -> None:
        from gptcli import textio

        path = _file_argument("/load", argument)
        if textio.input_format(path) not in ("jsonl", "json"):
            raise UsageError(f"/load {path}: reads a .jsonl file holding one `messages` record, as /save writes it")
        records = textio.read_records(path, "messages")
        if len(records) != 1:
            raise UsageError(f"/load {path}: holds {len(records)} records; /load reads one conversation")
        loaded = from_record(records[0].fields, records[0].where)
        why = self._no_images() if loaded.has_images() else None
        if why:  # refused now, rather than failing every reply after
            raise InputError(f"/load {path}: the conversation has images; {why}")
        loaded.system = loaded.system or self.conversation.system  # a file without one keeps the session's
        self.conversation.system, self.conversation.turns = loaded.system, loaded.turns
        self.turn = sum(turn["role"] == "user" for turn in loaded.turns)
        console.info(f"loaded {len(self.conversation.messages())} messages from {path}")

    _COMMANDS = {"/help": _help, "/system": _system, "/image": _image, "/reset": _reset, "/save": _save,
                 "/load": _load}


def _split(line: str) -> tuple[str, str]:
    name, *rest = line.strip().split(None, 1)  # the argument may hold newlines (/system over lines)
    return name.lower(), rest[0].strip() if rest else ""


def _unquoted(argument: str) -> str:
    """A path as a terminal's drag and drop gives it: in matching quotes when it holds spaces."""
    if len(argument) >= 2 and argument[0] == argument[-1] and argument[0] in "'\"":
        return argument[1:-1].strip()
    return argument


def _file_argument(command: str, argument: str) -> str:
    if not argument:
        raise UsageError(f"{command} needs a file name, e.g. {command} chat.jsonl")
    return argument
