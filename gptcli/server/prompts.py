"""Chat messages and prompt text to token ids, through the same services `gptcli generate` uses.

Chat goes through the model's chat template (``vision.encode``: ``prompting.encode_prompt`` for
a text model, the processor too for images), exactly as a `gptcli generate "PROMPT"` does; completions send the text as it is (``generate --raw``).
So greedy text from the server equals the command's for the same model and prompt.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from gptcli.errors import InputError
from gptcli.server.errors import ApiError, bad_request

# Without max_tokens a reply may use the context left after the prompt, up to this: long enough
# for an answer, short enough that a client that forgot max_tokens does not hold a row for minutes.
DEFAULT_MAX_TOKENS = 512
CHAT_ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role


MAX_IMAGES = 16  # per request: each is fetched, decoded and prefilled, and a URL may be 50 MiB


@dataclass(frozen=True)
class ImageSource:
    """An image part's URL and the JSON parameter that names it in errors."""

    url: str
    param: str


@dataclass(frozen=True)
class ChatPrompt:
    """The request's messages as the chat template takes them, and its images in part order.

    A message with only text parts has its texts joined into a string (as text templates read
    it); one with images keeps its parts, each image an ``{"type": "image"}`` the images fill.
    """

    messages: tuple[dict, ...]
    images: tuple[ImageSource, ...] = ()


def chat_messages(messages) -> ChatPrompt:
    """The request's messages checked: roles, and content of text and image_url parts.

    Raises:
        ApiError: 400 for a role other than system/user/assistant, content of another kind, an image
            outside a user message, or more than MAX_IMAGES images.
    """
    rendered, images = [], []
    for index, message in enumerate(messages):
        role = ROLE_ALIASES.get(message.role, message.role)
        if role not in CHAT_ROLES:
            raise bad_request(f"messages[{index}].role {message.role!r} is not supported; use one of "
                              f"{', '.join(CHAT_ROLES)}", f"messages[{index}].role")
        content, sources = _content(message.content, index)
        if sources and role != "user":
            raise bad_request(f"messages[{index}] is a {role} message with an image; images go in user messages",
                              sources[0].param)
        rendered.append({"role": role, "content": content})
        images.extend(sources)
    if len(images) > MAX_IMAGES:
        raise bad_request(f"the messages hold {len(images)} images, more than the {MAX_IMAGES} a request may have",
                          images[MAX_IMAGES].param)
    return ChatPrompt(tuple(rendered), tuple(images))


def _content(content, index: int) -> tuple[str | list[dict], list[ImageSource]]:
    from gptcli.services.vision import IMAGE_PART, text_part

    if isinstance(content, str):
        return content, []
    if content is None:
        raise bad_request(f"messages[{index}].content is missing; give a string or a list of text and image_url "
                          f"parts", f"messages[{index}].content")
    parts, images = [], []
    for number, part in enumerate(content):
        where = f"messages[{index}].content[{number}]"
        if part.type == "text" and part.text is not None:
            parts.append(text_part(part.text))
        elif part.type == "image_url" and part.url():
            parts.append(dict(IMAGE_PART))
            images.append(ImageSource(part.url(), f"{where}.image_url"))
        else:
            raise bad_request(f"{where} is of type {part.type!r} without its value; give text parts ('text') or "
                              f"image_url parts ('image_url': {{'url': ...}})", f"messages[{index}].content")
    if not images:  # text only: the string a text template expects, as if it had been sent as one
        return "\n".join(part["text"] for part in parts), []
    return parts, images


async def read_images(lm, sources: tuple[ImageSource, ...]) -> tuple:
    """The request's images fetched and checked (imageio's rules), off the event loop.

    Raises:
        ApiError: 400 when the model reads text only, for a URL that is neither a data URL nor
            http(s) (a server never opens files its clients name), or an image that fails its checks.
    """
    if not sources:
        return ()
    if not lm.takes_images:
        from gptcli.models.kinds import VISION_MODELS_HINT

        raise bad_request(f"{lm.name} reads text only, and the messages hold images; serve {VISION_MODELS_HINT}",
                          sources[0].param, code="images_not_supported")
    for source in sources:
        _check_scheme(source)
    return await asyncio.to_thread(_read_all, sources)


def _check_scheme(source: ImageSource) -> None:
    from gptcli.imageio import is_data_url

    if not (is_data_url(source.url) or source.url.lower().startswith(("http://", "https://"))):
        raise bad_request(f"{source.param}.url must be a data URL (data:image/png;base64,...) or an http(s) URL; "
                          f"the server does not open files named by a request", f"{source.param}.url")


def _read_all(sources: tuple[ImageSource, ...]) -> tuple:
    from gptcli.imageio import read_image

    images = []
    for source in sources:
        try:
            images.append(read_image(source.url, f"{source.param}.url"))
        except InputError as exc:
            raise bad_request(exc.message, f"{source.param}.url") from None
    return tuple(images)


def encode_chat(lm, messages: tuple[dict, ...], images: tuple = ()):
    """The messages through the model's chat template (and its processor, for images), ready for
    the reply: a ``vision.Encoded`` with the token ids and, with images, their pixel inputs."""
    from gptcli.services.prompting import Prompt
    from gptcli.services.vision import encode

    if not getattr(lm.tokenizer, "chat_template", None):
        raise bad_request(f"{lm.name} has no chat template; send a plain prompt to /v1/completions", "messages",
                          code="no_chat_template")
    _refuse_far_too_long(lm, sum(_characters(m["content"]) for m in messages), "the messages", "messages")
    prompt = Prompt(messages=messages, where="the messages", images=tuple(images))
    try:
        return encode(lm, prompt, None, raw=False)
    except InputError as exc:  # a template that rejects the messages, a processor that rejects the images
        raise bad_request(exc.message, "messages") from None


def _characters(content) -> int:
    return len(content) if isinstance(content, str) else sum(len(part.get("text", "")) for part in content)


def encode_text(lm, text: str, where: str) -> list[int]:
    """Token ids of a completion prompt, sent as it is (no chat template)."""
    from gptcli.services.prompting import Prompt

    _refuse_far_too_long(lm, len(text), where, "prompt")
    return _encoded(lm, Prompt(text=text, where=where), raw=True)


def _encoded(lm, prompt, raw: bool) -> list[int]:
    from gptcli.services.prompting import encode_prompt

    try:
        return encode_prompt(lm.tokenizer, prompt, None, raw)
    except InputError as exc:  # a template that rejects the messages: the request's fault
        raise bad_request(exc.message, "messages" if prompt.messages else "prompt") from None


def _refuse_far_too_long(lm, characters: int, where: str, param: str) -> None:
    """413 before tokenizing a text that cannot fit whatever it says (tokenizing it would cost seconds)."""
    from gptcli.services.prompting import MAX_CHARS_PER_TOKEN

    context = lm.context_length
    if context is not None and characters > context * MAX_CHARS_PER_TOKEN:
        raise too_long(f"{where}: {characters:,} characters, far more than the model's context of "
                       f"{context} tokens can hold; shorten the input", param)


def budget(lm, ids: list[int], max_tokens: int | None, where: str, param: str) -> int:
    """The tokens this prompt may generate: max_tokens (or DEFAULT_MAX_TOKENS), within the context left.

    A max_tokens past the context is lowered to what fits, as the reply's finish_reason
    "length" then says (clients send large defaults; refusing them would fail small models).

    Raises:
        ApiError: 413 when the prompt alone fills the context.
    """
    from gptcli.services.prompting import fit_to_context

    context = lm.context_length
    if context is not None and len(ids) >= context:
        raise too_long(f"{where} is {len(ids)} tokens, and the model's context is {context} tokens (the prompt "
                       f"and the reply share it); shorten the prompt", param)
    wanted = max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS
    return fit_to_context(ids, context, wanted, None, where).max_new_tokens


def too_long(message: str, param: str) -> ApiError:
    return ApiError(413, message, param, "context_length_exceeded")
