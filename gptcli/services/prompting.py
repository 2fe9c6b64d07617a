"""Prompts to token ids: chat templates, system prompts, and the context-length policy."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from gptcli.errors import InputError


@dataclass(frozen=True)
class Prompt:
    """One input: plain text, or chat messages. ``where`` names it in errors ("prompts.jsonl:3").

    ``images``: checked images (imageio.ImageInput) for a vision-language model; with messages,
    they fill the messages' image parts in order (services.vision)."""

    text: str | None = None
    messages: tuple[dict, ...] | None = None
    where: str = "the prompt"
    images: tuple = ()


@dataclass(frozen=True)
class Fitted:
    """Token ids ready to run, and how many new tokens they leave room for."""

    ids: list[int]
    max_new_tokens: int
    note: str | None = None  # why the prompt or the budget was cut, for a warning
    inputs: object = None  # a vision model's pixel inputs for these ids (services.vision.PixelInputs)


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
    rendered = render_chat(tokenizer, messages, prompt.where)
    # The template already holds the special tokens (BOS and friends): add none twice.
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])


# A chat template is code from the model folder: bound what it may cost. Real templates render in
# well under a millisecond and add a few hundred characters to the messages.
RENDER_SECONDS = 5.0
RENDER_EXTRA_CHARS = 1_000_000


def render_chat(tokenizer, messages: list[dict], where: str = "the prompt", add_generation_prompt: bool = True,
                seconds: float = RENDER_SECONDS) -> str:
    """The messages rendered by the model's chat template, within a time and size limit.

    Raises:
        InputError: the template rejects the messages, recurses too deep, runs past ``seconds``
            or writes far more than the messages hold (naming the template's file).
        GptcliError: rendering ran out of memory.
    """
    from gptcli.models.placement import is_out_of_memory, out_of_memory_error

    try:
        with _time_limit(seconds):
            rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                     tokenize=False)
    except _RenderTimeout:
        raise InputError(f"{_template_name(tokenizer)} ran for more than {seconds:g} s on {where} (a loop that "
                         f"never ends?); fix or replace the template") from None
    except RecursionError:
        raise InputError(f"{_template_name(tokenizer)} recurses without end on {where}; fix or replace "
                         f"the template") from None
    except Exception as exc:  # jinja raises its own errors for messages the template rejects
        if is_out_of_memory(exc):
            raise out_of_memory_error(f"rendering {_template_name(tokenizer)} on {where}", exc) from exc
        raise InputError(f"{where}: {_template_name(tokenizer)} rejected these messages "
                         f"({_first_line(exc)})") from None
    limit = RENDER_EXTRA_CHARS + 2 * sum(len(str(m.get("content", ""))) for m in messages)
    if len(rendered) > limit:
        raise InputError(f"{_template_name(tokenizer)} wrote {len(rendered):,} characters for {where}, far more "
                         f"than its messages hold; fix or replace the template")
    return rendered


class _RenderTimeout(Exception):
    """Raised inside the rendering thread when the template runs past its time."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _RenderTimeout in this thread if the block runs longer than ``seconds``."""
    import threading

    thread_id = threading.get_ident()
    _WATCHDOG.arm(thread_id, seconds)
    try:
        yield
    finally:
        _WATCHDOG.disarm(thread_id)


class _Watchdog:
    """One background thread that stops renders running past their deadline.

    A jinja template runs as Python code, so an exception set on the rendering thread stops
    even a loop that writes nothing; unlike SIGALRM this works in any thread (a server's
    workers too). One thread for all renders: arming costs a dict entry, not a thread start
    (a Timer per render tripled the cost of a short render).
    """

    POLL_SECONDS = 0.1

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._deadlines: dict[int, float] = {}
        self._thread: threading.Thread | None = None

    def arm(self, thread_id: int, seconds: float) -> None:
        import threading
        import time

        with self._lock:
            self._deadlines[thread_id] = time.monotonic() + seconds
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="gptcli-template-watchdog", daemon=True)
                self._thread.start()

    def disarm(self, thread_id: int) -> None:
        import ctypes

        with self._lock:
            if self._deadlines.pop(thread_id, None) is None:  # it fired as the render ended: withdraw it
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)

    def _watch(self) -> None:
        import ctypes
        import time

        while True:
            time.sleep(self.POLL_SECONDS)
            with self._lock:
                now = time.monotonic()
                for thread_id in [t for t, deadline in self._deadlines.items() if deadline <= now]:
                    del self._deadlines[thread_id]
                    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                                               ctypes.py_object(_RenderTimeout))


_WATCHDOG = _Watchdog()


def _template_name(tokenizer) -> str:
    """The model's chat template, named by the file it came from (what the user can fix)."""
    folder = Path(getattr(tokenizer, "name_or_path", "") or ".")
    for name in ("chat_template.jinja", "tokenizer_config.json"):
        if (folder / name).is_file():
            return f"the model's chat template ({folder / name})"
    return "the model's chat template"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:240] if lines else type(exc).__name__


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
    return Prompt(text=text, where=prompt.where, images=prompt.images)


def fit_prompt(lm, prompt: Prompt, system: str | None, raw: bool, max_new_tokens: int,
               truncate: str | None) -> Fitted:
    """A prompt as token ids that fit ``lm``'s context with room for the reply: pre-cut when far
    too long, encoded (chat template unless raw), then the long-prompt policy. What generate
    does locally and what the server does for it, so both run the same ids.

    Raises:
        InputError: too long without ``truncate``, or messages the template rejects.
    """
    from dataclasses import replace

    from gptcli.services.vision import encode

    cut = precut(prompt, lm.context_length, truncate)
    encoded = encode(lm, cut, system, raw)
    context = lm.context_length
    if encoded.inputs and context is not None and len(encoded.ids) >= context:  # image tokens cannot be cut
        raise InputError(f"{prompt.where} is {len(encoded.ids)} tokens with its images' tokens, longer than the "
                         f"model's context of {context} tokens; send fewer or smaller images, or less text")
    fitted = fit_to_context(encoded.ids, context, max_new_tokens, truncate, prompt.where)
    return replace(fitted, inputs=encoded.inputs)


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
