"""A chat conversation: its messages, fitting them to the model's context, and its file format.

Nothing heavy: the local engine (``services.chat``) and the --server client (``cli.chat_remote``)
both keep their conversation here, so the client stays torch-free. Its only I/O is reading the
images a message holds (``imageio``: /image, and a loaded file's image parts).

A message's content is a string, or a tuple of parts: text parts (``services.vision.text_part``)
and image parts (``image_part``: the checked image and the name it was given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from gptcli.errors import InputError
from gptcli.services.vision import IMAGE_PART, text_part

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

    def add(self, role: str, content: str | tuple[dict, ...]) -> None:
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

    def has_images(self) -> bool:
        return any(image_parts(turn["content"]) for turn in self.turns)


# ---------------------------------------------------------------- images in messages


def image_part(source: str, image) -> dict:
    """An image in a message: the checked image (imageio.ImageInput), and the path or URL it was
    given as, which /save writes (ImageInput.name may be shortened for messages)."""
    return {"type": "image", "source": source, "image": image}


def image_parts(content) -> list[dict]:
    return [] if isinstance(content, str) else [part for part in content if part["type"] == "image"]


def with_images(text: str, images: list[dict]) -> str | tuple[dict, ...]:
    """A user message's content: the images first (where generate --image and the vision templates
    put them, so a chat's first turn and that generate see the same prompt), then the text."""
    return (*images, text_part(text)) if images else text


def split_images(messages: list[dict]) -> tuple[list[dict], tuple]:
    """The messages as chat templates take them (each image part a bare {"type": "image"}) and
    their images in order, which fill those parts (services.vision.encode)."""
    plain, images = [], []
    for message in messages:
        parts = image_parts(message["content"])
        if parts:
            images += [part["image"] for part in parts]
            message = {**message, "content": tuple(dict(IMAGE_PART) if part["type"] == "image" else part
                                                   for part in message["content"])}
        plain.append(message)
    return plain, tuple(images)


def read_kept_image(source: str, where: str):
    """The image at ``source``, checked (imageio.read_image), its bytes kept in memory: a chat goes on
    for long, and every turn sees its images again; a file edited or moved meanwhile must change
    no earlier turn, nor fail them all.

    Raises:
        InputError: an image that cannot be used, or stdin (-), which holds the conversation.
    """
    from dataclasses import replace
    from hashlib import sha256
    from pathlib import Path

    from gptcli.imageio import STDIN, read_image

    if source == STDIN:
        raise InputError(f"{where} -: stdin holds the conversation; give the image's path or URL")
    image = read_image(source, where)
    if image.path is None:  # a URL's bytes are kept already
        return image
    try:
        data = Path(image.path).expanduser().read_bytes()
    except OSError as exc:
        raise InputError(f"{where} {image.name}: cannot be read ({exc.strerror})") from None
    if sha256(data).hexdigest() != image.digest:
        raise InputError(f"{where} {image.name}: changed while it was read; try again")
    return replace(image, path=None, data=data)


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
    inputs: object = None  # a vision model's pixel inputs for these ids (services.vision.PixelInputs)


def reply_room(context: int, max_new_tokens: int) -> int:
    """The room kept free for the reply: ``max_new_tokens``, but at most half the context (a limit
    past the context would otherwise leave room for no history at all)."""
    return min(max_new_tokens, context // 2)


def fit_conversation(conversation: Conversation, encode: Callable[[list[dict]], object], context: int | None,
                     max_new_tokens: int) -> Fitted:
    """The conversation as token ids that fit ``context`` with room for the reply, dropping the
    oldest turns (never the system prompt or the newest message) until it does. The turns
    dropped leave ``conversation`` for good (what the model sees is what /save writes); when the
    newest message cannot fit, nothing is dropped.

    Args:
        encode: messages to token ids through the model's chat template: a list of ids, or a
            services.vision.Encoded (ids, and the pixel inputs of the messages' images).
        context: the model's context in tokens (None: no limit).

    Raises:
        InputError: the newest message, with the system prompt, does not fit on its own.
    """
    ids, inputs = _encoded(encode(conversation.messages()))
    if context is None:
        return Fitted(ids, max_new_tokens, inputs=inputs)
    trimmed = Conversation(conversation.system, list(conversation.turns))  # the history stays if nothing fits
    before, dropped = len(ids), 0
    while len(ids) + reply_room(context, max_new_tokens) > context and trimmed.can_drop():
        trimmed.drop_oldest_turn()
        dropped += 1
        ids, inputs = _encoded(encode(trimmed.messages()))
    if len(ids) >= context:
        raise too_long(len(ids), context)
    conversation.turns[:] = trimmed.turns
    size = f" ({before} tokens and {reply_room(context, max_new_tokens)} for the reply; it holds {context})"
    notes = [dropped_note(dropped, bool(conversation.system), size)] if dropped else []
    room = context - len(ids)
    if room < max_new_tokens:
        notes.append(f"only {room} new tokens fit in the context of {context} after the conversation's "
                     f"{len(ids)} tokens (asked {max_new_tokens})")
    return Fitted(ids, min(room, max_new_tokens), tuple(notes), inputs)


def _encoded(encoded) -> tuple[list[int], object]:
    return (encoded, None) if isinstance(encoded, list) else (encoded.ids, encoded.inputs)


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
    """The conversation as one `gptcli generate --input` record: ``{"messages": [...]}``, each image
    part as OpenAI's ``{"type": "image_url", "image_url": {"url": PATH_OR_URL}}`` (the name it was
    given: a saved chat reloads, and generate reads it, only where that path still leads to it)."""
    return {"messages": [{**m, "content": _saved(m["content"])} for m in conversation.messages()]}


def _saved(content):
    if isinstance(content, str):
        return content
    return [{"type": "image_url", "image_url": {"url": part["source"]}} if part["type"] == "image" else dict(part)
            for part in content]


def from_record(fields: dict, where: str) -> Conversation:
    """The conversation held by a ``messages`` record (as `to_record` writes, or `generate --input` reads),
    its images read again and checked (imageio).

    Raises:
        InputError: naming ``where`` and the first message that is not a system (first only, string
            content), user or assistant message with string content or text and image parts; or an
            image that cannot be used.
    """
    messages = fields.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{where}: needs a field 'messages', a non-empty list of {{role, content}} objects")
    conversation = Conversation()
    for number, message in enumerate(messages, start=1):
        role, content = _checked(message, number, where)
        if role == "system" and number == 1 and isinstance(content, str):
            conversation.system = content
        elif role == "system":
            raise InputError(f"{where}: messages[{number}] is a system message; only the first may be one, "
                             f"its 'content' a string")
        else:
            conversation.add(role, content)
    return conversation


def _checked(message, number: int, where: str) -> tuple[str, str | tuple[dict, ...]]:
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) and not (isinstance(content, list) and content):
        raise InputError(f"{where}: messages[{number}] needs a string 'content' (or a list of text and "
                         f"image_url parts)")
    if message.get("role") not in ROLES:
        raise InputError(f"{where}: messages[{number}] has role {message.get('role')!r}; a chat holds "
                         f"{', '.join(ROLES)}")
    if isinstance(content, list):
        content = tuple(_loaded_part(part, f"{where}: messages[{number}].content[{k}]")
                        for k, part in enumerate(content, start=1))
    return message["role"], content


def _loaded_part(part, where: str) -> dict:
    """A text part, or an image part read again from its path or URL (OpenAI's image_url part, or
    transformers' {"type": "image", "image": ...}, as generate --input reads them)."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return text_part(part["text"])
    value = part.get("image_url") if kind == "image_url" else part.get("image") if kind == "image" else None
    source = value.get("url") if isinstance(value, dict) else value
    if not isinstance(source, str) or not source:
        raise InputError(f"{where} must be {{\"type\": \"text\", \"text\": ...}} or "
                         f"{{\"type\": \"image_url\", \"image_url\": {{\"url\": PATH_OR_URL}}}}")
    return image_part(source, read_kept_image(source, f"{where}:"))
