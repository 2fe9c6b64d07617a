"""Prompts with images, for image-text-to-text models: messages with image parts, rendered by the
model's chat template, then turned into token ids and pixel tensors by the model's processor.

Messages here hold content as a string or as a list of parts, ``{"type": "text", "text": ...}``
and ``{"type": "image"}``, the form the hub's vision chat templates read; the prompt's images
fill the image parts in order. The processor expands each image part into the image tokens
the model expects, so the ids count every image token: the context check and the batch
planner's token budget see them like any other token.
"""

from __future__ import annotations

from dataclasses import dataclass

from gptcli.errors import InputError

IMAGE_PART = {"type": "image"}


@dataclass(frozen=True)
class Encoded:
    """A prompt's token ids and the processor's other tensors (pixel values, image sizes ...)."""

    ids: list[int]
    inputs: dict | None = None


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def count_images(messages) -> int:
    return sum(1 for m in messages if not isinstance(m["content"], str)
               for part in m["content"] if part.get("type") == "image")


def image_messages(prompt, system: str | None) -> list[dict]:
    """The prompt as messages with parts: a plain prompt becomes one user turn, its images first
    (where the vision templates put them); a system prompt leads unless the messages have one."""
    if prompt.messages is None:
        content = [dict(IMAGE_PART) for _ in prompt.images] + [text_part(prompt.text)]
        messages = [{"role": "user", "content": content}]
    else:
        messages = [{"role": m["role"], "content": _parts(m["content"])} for m in prompt.messages]
    if system is not None and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": [text_part(system)]})
    return messages


def _parts(content) -> list[dict]:
    # Vision templates loop over the parts; a string would be read a character at a time.
    return [text_part(content)] if isinstance(content, str) else [dict(part) for part in content]


def text_only(prompt):
    """The prompt with each message's text parts joined into a string, as text templates read them."""
    if prompt.messages is None or all(isinstance(m["content"], str) for m in prompt.messages):
        return prompt
    from dataclasses import replace

    messages = tuple({**m, "content": m["content"] if isinstance(m["content"], str) else
                      "\n".join(part["text"] for part in m["content"] if part.get("type") == "text")}
                     for m in prompt.messages)
    return replace(prompt, messages=messages)


def encode(lm, prompt, system: str | None, raw: bool) -> Encoded:
    """Token ids (and pixel tensors) for ``prompt`` on ``lm``: a text model's through
    ``prompting.encode_prompt``; a vision model's through its chat template and processor.

    Raises:
        InputError: images for a text-only model, images with --raw, or the template rejects them.
    """
    from gptcli.services.prompting import encode_prompt

    images = list(prompt.images)
    if not lm.takes_images:
        if images:
            from gptcli.models.kinds import VISION_MODELS_HINT

            raise InputError(f"{prompt.where} has images, and {lm.name} reads text only; pass --model with "
                             f"{VISION_MODELS_HINT}")
        return Encoded(encode_prompt(lm.tokenizer, text_only(prompt), system, raw))
    if raw:
        if images:
            raise InputError(f"{prompt.where}: --raw sends text as it is, and images need the chat template to "
                             f"place their tokens; drop --raw")
        return Encoded(encode_prompt(lm.tokenizer, text_only(prompt), system, raw))
    if not getattr(lm.tokenizer, "chat_template", None):
        raise InputError(f"{lm.name} has no chat template to place the images in; give it one "
                         f"(chat_template.jinja in the model folder)")
    messages = image_messages(prompt, system)
    if count_images(messages) != len(images):
        raise InputError(f"{prompt.where}: {count_images(messages)} image parts for {len(images)} images")
    return _processed(lm, messages, images, prompt.where)


def _processed(lm, messages: list[dict], images: list, where: str) -> Encoded:
    from gptcli.services.prompting import render_chat

    rendered = render_chat(lm.tokenizer, messages, where)
    pixels = PixelInputs(lm.processor, rendered, tuple(images), where)
    out = pixels.processed()
    return Encoded(out["input_ids"][0].tolist(), pixels if images else None)


@dataclass(frozen=True)
class PixelInputs:
    """What the processor makes of a rendered prompt and its images, made again at the prefill
    (``tensors()``) rather than kept from the fit: a batch job plans thousands of prompts up front,
    and a prompt's pixel tensors can be tens of MiB."""

    processor: object
    rendered: str
    images: tuple
    where: str

    def processed(self) -> dict:
        try:
            return self.processor(text=[self.rendered], images=[[image.pixels() for image in self.images]]
                                  if self.images else None, add_special_tokens=False, return_tensors="pt")
        except InputError:
            raise
        except Exception as exc:  # processors raise ValueError/TypeError for prompts they cannot pair with images
            raise InputError(f"{self.where}: the model's processor cannot use these images "
                             f"({_first_line(exc)})") from None

    def tensors(self) -> dict:
        """The model's other inputs for these ids (pixel values, image sizes ...)."""
        out = self.processed()
        return {name: value for name, value in out.items() if name not in ("input_ids", "attention_mask")}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
