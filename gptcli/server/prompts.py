"""Chat messages and prompt text to token ids, through the same services `gptcli generate` uses.

Chat goes through the model's chat template (``prompting.encode_prompt``), exactly as a
`gptcli generate "PROMPT"` does; completions send the text as it is (``generate --raw``).
So greedy text from the server equals the command's for the same model and prompt.
"""

from __future__ import annotations

from gptcli.errors import InputError
from gptcli.server.errors import ApiError, bad_request

# Without max_tokens a reply may use the context left after the prompt, up to this: long enough
# for an answer, short enough that a client that forgot max_tokens does not hold a row for minutes.
DEFAULT_MAX_TOKENS = 512
CHAT_ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role


def chat_messages(messages) -> tuple[dict, ...]:
    """The request's messages as the chat template takes them: roles checked, text parts joined.

    Raises:
        ApiError: 400 for a role other than system/user/assistant, or content that is not text.
    """
    rendered = []
    for index, message in enumerate(messages):
        role = ROLE_ALIASES.get(message.role, message.role)
        if role not in CHAT_ROLES:
            raise bad_request(f"messages[{index}].role {message.role!r} is not supported; use one of "
                              f"{', '.join(CHAT_ROLES)}", f"messages[{index}].role")
        rendered.append({"role": role, "content": _content_text(message.content, index)})
    return tuple(rendered)


def _content_text(content, index: int) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        raise bad_request(f"messages[{index}].content is missing; give a string or a list of text parts",
                          f"messages[{index}].content")
    texts = []
    for number, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise bad_request(f"messages[{index}].content[{number}] is of type {part.type!r}; only text parts "
                              f"are supported", f"messages[{index}].content")
        texts.append(part.text)
    return "\n".join(texts)


def encode_chat(lm, messages: tuple[dict, ...]) -> list[int]:
    """Token ids of the messages through the model's chat template, ready for the reply."""
    from gptcli.services.prompting import Prompt

    if not getattr(lm.tokenizer, "chat_template", None):
        raise bad_request(f"{lm.name} has no chat template; send a plain prompt to /v1/completions", "messages",
                          code="no_chat_template")
    _refuse_far_too_long(lm, sum(len(m["content"]) for m in messages), "the messages", "messages")
    return _encoded(lm, Prompt(messages=messages, where="the messages"), raw=False)


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
