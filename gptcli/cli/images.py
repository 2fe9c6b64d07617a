"""Images on the command line and in batch records: --image, a record's `images`, and
OpenAI-style image parts in `messages`. All are read and checked (imageio) before any model loads."""

from __future__ import annotations

from typing import Annotated, List, Optional

import typer

from gptcli.cli.options import INPUT_PANEL
from gptcli.errors import InputError, UsageError

Images = Annotated[Optional[List[str]], typer.Option(
    "--image", rich_help_panel=INPUT_PANEL,
    help="An image for a vision-language model: a path, an http(s) URL, or - for image bytes on stdin "
         "(repeatable; with --input, every record gets them after its own).")]

ROLES = ("system", "user", "assistant", "tool")


def option_images(specs: list[str] | None) -> tuple:
    """The --image images, checked.

    Raises:
        UsageError: - given twice (stdin holds one image).
        InputError: an image that cannot be used (imageio.read_image).
    """
    from gptcli.imageio import STDIN, read_image

    specs = list(specs or ())
    if specs.count(STDIN) > 1:
        raise UsageError("--image - reads stdin, which holds one image; give the others as files")
    return tuple(read_image(spec, "--image") for spec in specs)


def record_images(record) -> tuple:
    """A record's own `images`: a path or URL, or a list of them."""
    from gptcli.imageio import read_image

    value = record.fields.get("images")
    if value is None:
        return ()
    sources = [value] if isinstance(value, str) else value
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
        raise InputError(f"{record.where}: field 'images' must be a path or URL, or a non-empty list of them")
    if "-" in sources:
        raise InputError(f"{record.where}: field 'images' cannot read stdin (-); give the image's path")
    return tuple(read_image(source, f"{record.where}: images:") for source in sources)


def record_messages(record) -> tuple[tuple[dict, ...], tuple]:
    """A record's `messages`, checked, with image parts read: (messages, their images in order).

    A message's content is a string, or a list of parts: {"type": "text", "text": ...},
    {"type": "image_url", "image_url": {"url": ...}} (OpenAI's) or {"type": "image", "image": ...}
    (transformers'), the url or image a path, an http(s) URL or a data URL.
    """
    messages = record.fields["messages"]
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{record.where}: field 'messages' must be a non-empty list of {{role, content}} objects")
    checked, images = [], []
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            raise InputError(f"{record.where}: messages[{number}] must be a {{role, content}} object")
        if message.get("role") not in ROLES:
            raise InputError(f"{record.where}: messages[{number}] has role {message.get('role')!r}; "
                             f"use one of {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, list) and content:
            content = _parts(content, f"{record.where}: messages[{number}]", images)
        elif not isinstance(content, str):
            raise InputError(f"{record.where}: messages[{number}] needs a string 'content' or a list of parts")
        checked.append({**message, "content": content})
    return tuple(checked), tuple(images)


def _parts(parts: list, where: str, images: list) -> tuple[dict, ...]:
    from gptcli.imageio import read_image
    from gptcli.services.vision import IMAGE_PART, text_part

    kept = []
    for number, part in enumerate(parts, start=1):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            kept.append(text_part(part["text"]))
            continue
        source = _image_source(part) if kind in ("image_url", "image") else None
        if source is None:
            raise InputError(f"{where}.content[{number}] must be {{\"type\": \"text\", \"text\": ...}} or "
                             f"{{\"type\": \"image_url\", \"image_url\": {{\"url\": PATH_OR_URL}}}}")
        if source == "-":
            raise InputError(f"{where}.content[{number}] cannot read stdin (-); give the image's path")
        images.append(read_image(source, f"{where}.content[{number}]:"))
        kept.append(dict(IMAGE_PART))
    return tuple(kept)


def _image_source(part: dict) -> str | None:
    value = part.get("image_url") if part["type"] == "image_url" else (
        part.get("image") or part.get("url") or part.get("path"))
    if isinstance(value, dict):
        value = value.get("url")
    return value if isinstance(value, str) and value else None


def image_names(images: tuple) -> list[str]:
    return [image.name for image in images]
