"""A chat conversation: its messages, fitting them to the model's context, and its file format.

No I/O and nothing heavy: the local engine (``services.chat``) and the --server client
(``cli.chat_remote``) both keep their conversation here, so the client stays torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from gptcli.errors import InputError

ROLES = ("system", "user", "assistant")
WHERE = "the conversation"  # how a conversation is named in the errors of the services it goes through


@dataclass
class Conversation:
    """The system prompt and the turns after it (user and assistant messages, in order)."""

    system: str | None = None
    turns: list[dict] = field(default_factory=list)

    def messages(self) -> list[dict]:
        """The messages as chat templates take them: the system prompt first, when there is one."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [dict(turn) for turn in self.turns]

    def add(self, role: str, content: str) -> None:
        self.turns.append({"role": role, "content": content})

    def reset(self) -> None:
        """Forget the turns; the system prompt stays (it is a setting of the session, not a turn)."""
        self.turns.clear()

    def can_drop(self) -> bool:
        """Whether a turn can go and leave the newest user message: there is more than one user message."""
        return sum(turn["role"] == "user" for turn in self.turns) > 1

    def drop_oldest_turn(self) -> None:
        """Remove the oldest user message and the replies to it (up to the next user message)."""
        end = next(i for i, turn in enumerate(self.turns) if i > 0 and turn["role"] == "user")
        del self.turns[:end]

    def undo_user_message(self) -> None:
        """Take back the newest message when it got no reply (it failed, or was stopped before any text)."""
        if self.turns and self.turns[-1]["role"] == "user":
            self.turns.pop()


@dataclass(frozen=True)
class ChatSettings:
    """What every reply is made with: sampling (engine.sampling.SamplingParams, its seed set when
    sampling: a turn's samples follow from it and the turn's number, locally and through a server
    alike), the reply's limit and stop strings."""

    sampling: object
    max_new_tokens: int
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reply:
    """A reply as it ended. ``finish_reason``: stop, eos, length or cancelled (Ctrl-C); a cancelled
    reply's text is what had been shown."""

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    generated_tokens: int = 0


@dataclass(frozen=True)
class Fitted:
    """The conversation's token ids, the new tokens they leave room for, and what was done to fit."""

    ids: list[int]
    max_new_tokens: int
    notes: tuple[str, ...] = ()


def reply_room(context: int, max_new_tokens: int) -> int:
    """The room kept free for the reply: ``max_new_tokens``, but at most half the context (a limit
    past the context would otherwise leave room for no history at all)."""
    return min(max_new_tokens, context // 2)


def fit_conversation(conversation: Conversation, encode: Callable[[list[dict]], list[int]], context: int | None,
                     max_new_tokens: int) -> Fitted:
    """The conversation as token ids that fit ``context`` with room for the reply, dropping the
    oldest turns (never the system prompt or the newest message) until it does. The turns
    dropped leave ``conversation`` for good (what the model sees is what /save writes); when the
    newest message cannot fit, nothing is dropped.

    Args:
        encode: messages to token ids, through the model's chat template.
        context: the model's context in tokens (None: no limit).

    Raises:
        InputError: the newest message, with the system prompt, does not fit on its own.
    """
    ids = encode(conversation.messages())
    if context is None:
        return Fitted(ids, max_new_tokens)
    trimmed = Conversation(conversation.system, list(conversation.turns))  # the history stays if nothing fits
    before, dropped = len(ids), 0
    while len(ids) + reply_room(context, max_new_tokens) > context and trimmed.can_drop():
        trimmed.drop_oldest_turn()
        dropped += 1
        ids = encode(trimmed.messages())
    if len(ids) >= context:
        raise too_long(len(ids), context)
    conversation.turns[:] = trimmed.turns
    size = f" ({before} tokens and {reply_room(context, max_new_tokens)} for the reply; it holds {context})"
    notes = [dropped_note(dropped, bool(conversation.system), size)] if dropped else []
    room = context - len(ids)
    if room < max_new_tokens:
        notes.append(f"only {room} new tokens fit in the context of {context} after the conversation's "
                     f"{len(ids)} tokens (asked {max_new_tokens})")
    return Fitted(ids, min(room, max_new_tokens), tuple(notes))


def dropped_note(dropped: int, kept_system: bool, size: str = "") -> str:
    """The notice for turns dropped to fit the context (``size``: the numbers, where known)."""
    turns = "the oldest turn" if dropped == 1 else f"the oldest {dropped} turns"
    kept = " (the system prompt stays)" if kept_system else ""
    return f"the conversation outgrew the model's context{size}: dropped {turns}{kept}"


def too_long(tokens: int, context: int) -> InputError:
    return InputError(f"this message is {tokens} tokens with the system prompt and the chat template, and the "
                      f"model's context is {context} tokens (the reply shares it); send a shorter message")


# ---------------------------------------------------------------- the file format of /save and /load


def to_record(conversation: Conversation) -> dict:
    """The conversation as one `gptcli generate --input` record: ``{"messages": [...]}``."""
    return {"messages": conversation.messages()}


def from_record(fields: dict, where: str) -> Conversation:
    """The conversation held by a ``messages`` record (as `to_record` writes, or `generate --input` reads).

    Raises:
        InputError: naming ``where`` and the first message that is not a system (first only),
            user or assistant message with string content.
    """
    messages = fields.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{where}: needs a field 'messages', a non-empty list of {{role, content}} objects")
    conversation = Conversation()
    for number, message in enumerate(messages, start=1):
        role, content = _checked(message, number, where)
        if role == "system" and number == 1:
            conversation.system = content
        elif role == "system":
            raise InputError(f"{where}: messages[{number}] is a system message; only the first may be one")
        else:
            conversation.add(role, content)
    return conversation


def _checked(message, number: int, where: str) -> tuple[str, str]:
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise InputError(f"{where}: messages[{number}] needs a string 'content'")
    if message.get("role") not in ROLES:
        raise InputError(f"{where}: messages[{number}] has role {message.get('role')!r}; a chat holds "
                         f"{', '.join(ROLES)}")
    return message["role"], message["content"]
