"""`gptcli chat --server URL`: the replies come from a running `gptcli serve`, streamed.

The server renders and counts the conversation with its model's tokenizer (the client has
neither: it imports no torch or transformers). It offers no token count and no context size,
so the client fits the conversation by what the server answers: a conversation it refuses as
longer than the context loses its oldest turn and is sent again.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable

from gptcli.cli.generate_remote import GENERATE_PATH
from gptcli.errors import GptcliError, InputError
from gptcli.services.conversation import WHERE, ChatSettings, Conversation, Reply, dropped_note, too_long
from gptcli.signals import Terminated

# How the server's generate route refuses a prompt longer than the context (services.prompting.fit_to_context):
# "<where> is N tokens, longer than the model's context of C tokens; ...". It has no code of its own.
TOO_LONG = f"{WHERE} is "
TOO_LONG_MARK = "longer than the model's context of "


class RemoteChat:
    """Replies to a conversation from the server ``client`` talks to (client.ServerClient)."""

    def __init__(self, client, model: str | None, model_name: str, settings: ChatSettings,
                 takes_images: bool | None = None):
        self.client = client
        self.model = model
        self.model_name = model_name
        self.settings = settings
        self.takes_images = takes_images  # None: a server too old to say (its route takes no images)

    def reply(self, conversation: Conversation, turn: int, on_text: Callable[[str], None],
              on_note: Callable[[str], None]) -> Reply:
        """As ``services.chat.LocalChat.reply``; Ctrl-C closes the stream, and the server cancels the reply."""
        trimmed = Conversation(conversation.system, list(conversation.turns))  # the history stays if nothing fits
        dropped = 0
        while True:
            # Said with the first answer, before the reply's text: only then is it known that it fits now.
            notes = [dropped_note(dropped, bool(conversation.system))] if dropped else []
            try:
                reply = self._streamed(trimmed, turn, on_text, on_note, notes)
            except InputError as exc:
                if not _is_too_long(exc):
                    raise
                if not trimmed.can_drop():
                    raise _alone_too_long(exc) from None
                trimmed.drop_oldest_turn()
                dropped += 1
                continue
            conversation.turns[:] = trimmed.turns  # as locally: the turns dropped leave the conversation
            return reply

    def close(self) -> None:
        pass

    def _streamed(self, conversation: Conversation, turn: int, on_text, on_note, notes: list[str]) -> Reply:
        stream = self.client.stream(GENERATE_PATH, self._body(conversation, turn))
        shown: list[str] = []
        try:
            for event in stream:
                while notes:
                    on_note(notes.pop(0))
                if "text" in event:
                    shown.append(event["text"])
                    on_text(event["text"])
                    continue
                for note in event.get("notes", ()):
                    on_note(note)
                answer = event["completions"][0]
                return Reply(answer["text"], answer["finish_reason"], answer["prompt_tokens"],
                             answer["generated_tokens"])
        except KeyboardInterrupt as exc:
            if isinstance(exc, Terminated):  # SIGTERM or SIGHUP: the session ends (the stream closes below)
                raise
            return Reply("".join(shown), "cancelled")
        finally:
            stream.close()  # at once: the server sees the connection go and cancels the reply
        raise GptcliError(f"the stream from {self.client.url} ended without a reply (did the server stop?)")

    def _body(self, conversation: Conversation, turn: int) -> dict:
        from gptcli.imageio import data_url
        from gptcli.services.conversation import split_images

        settings = self.settings
        messages, images = split_images(conversation.messages())
        return {"model": self.model, "messages": messages, "images": [data_url(image) for image in images],
                "where": WHERE,
                "max_new_tokens": settings.max_new_tokens, "sampling": asdict(settings.sampling),
                "stop": list(settings.stop), "key": str(turn), "stream": True}


def _is_too_long(exc: InputError) -> bool:
    return exc.message.startswith(TOO_LONG) and TOO_LONG_MARK in exc.message


def _alone_too_long(exc: InputError) -> InputError:
    """The server's refusal of the newest message alone, in the words a local run uses."""
    import re

    numbers = re.search(r" is (\d+) tokens, longer than the model's context of (\d+) tokens", exc.message)
    return too_long(int(numbers.group(1)), int(numbers.group(2))) if numbers else exc
