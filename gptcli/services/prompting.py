"""Prompts to token ids: chat templates, system prompts, and the context-length policy."""

from __future__ import annotations

from dataclasses import dataclass

from gptcli.errors import InputError


@dataclass(frozen=True)
class Prompt:
    """One input: plain text, or chat messages. ``where`` names it in errors ("prompts.jsonl:3")."""

    text: str | None = None
    messages: tuple[dict, ...] | None = None
    where: str = "the prompt"


@dataclass(frozen=True)
class Fitted:
    """Token ids ready to run, and how many new tokens they leave room for."""

    ids: list[int]
    max_new_tokens: int
    note: str | None = None  # why the prompt or the budget was cut, for a warning


def encode_prompt(tokenizer, prompt: Prompt, system: str | None = None, raw: bool = False) -> list[int]:
    """Token ids for a prompt: through the chat template when the tokenizer has one, unless raw."""
    if raw or not getattr(tokenizer, "chat_template", None):
        if prompt.messages is not None:
            raise InputError(f"{prompt.where}: chat messages need a chat template, and "
                             f"{'--raw was given' if raw else 'this model has none'}; give a plain prompt")
        text = prompt.text if system is None else f"{system}\n\n{prompt.text}"
        return list(tokenizer(text, add_special_tokens=True)["input_ids"])
    messages = list(prompt.messages) if prompt.messages is not None else [{"role": "user", "content": prompt.text}]
    if system is not None and not any(m.get("role") == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system})
    try:
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # jinja raises its own errors for messages the template rejects
        raise InputError(f"{prompt.where}: the model's chat template rejected these messages ({exc})") from None
    # The template already holds the special tokens (BOS and friends): add none twice.
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])


# No tokenizer makes tokens this long: a text with more characters than this per context token
# cannot fit, whatever it says, and is refused (or pre-cut) before a slow, memory-hungry tokenization.
MAX_CHARS_PER_TOKEN = 100


def precut(prompt: Prompt, context: int | None, truncate: str | None) -> Prompt:
    """Refuse, or cut on the --truncate side, a plain prompt far longer than any context could hold.

    Raises:
        InputError: the prompt is too long and no --truncate was given.
    """
    limit = None if context is None else context * MAX_CHARS_PER_TOKEN
    if prompt.text is None or limit is None or len(prompt.text) <= limit:
        return prompt
    if truncate is None:
        raise InputError(f"{prompt.where} is {len(prompt.text):,} characters, far more than the model's context "
                         f"of {context} tokens can hold; shorten it or pass --truncate left|right")
    text = prompt.text[-limit:] if truncate == "left" else prompt.text[:limit]
    return Prompt(text=text, where=prompt.where)


def fit_to_context(ids: list[int], context: int | None, max_new_tokens: int, truncate: str | None,
                   where: str) -> Fitted:
    """Apply the long-prompt policy: error with both numbers, or cut on the side asked.

    A prompt that fits but leaves fewer than ``max_new_tokens`` of room gets a
    smaller budget, with a note the caller shows as a warning (never silent).
    """
    if context is None:
        return Fitted(ids, max_new_tokens)
    if len(ids) >= context:
        if truncate is None:
            raise InputError(f"{where} is {len(ids)} tokens, longer than the model's context of {context} "
                             f"tokens; shorten it or pass --truncate left|right")
        keep = max(1, context - max_new_tokens) if max_new_tokens < context else max(1, context // 2)
        cut = ids[-keep:] if truncate == "left" else ids[:keep]
        note = f"{where}: cut from {len(ids)} to {keep} tokens ({truncate}) to fit the context of {context}"
        return Fitted(cut, min(max_new_tokens, context - keep), note)
    room = context - len(ids)
    if room < max_new_tokens:
        note = (f"{where}: only {room} new tokens fit in the context of {context} after its "
                f"{len(ids)} prompt tokens (asked {max_new_tokens})")
        return Fitted(ids, room, note)
    return Fitted(ids, max_new_tokens)
