"""Reading images for vision-language models: files, stdin, data URLs and http(s) URLs.

Every image is read and checked here, before any model loads: it must decode completely,
be of a format on the list below, and hold no more pixels than MAX_PIXELS (a small file can
claim a huge canvas: a decompression bomb). Only the pixels are kept: the EXIF orientation
is applied and all other metadata is dropped, and nothing an image names is opened.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from gptcli.errors import InputError

# Raster formats Pillow decodes itself. Not EPS/PS (Pillow hands those to Ghostscript, which runs
# the file as a program), not PDF or SVG (documents that may reference other files).
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "ICO")
MAX_PIXELS = 50_000_000  # about 7,000 x 7,000: far past what any processor keeps, short of a bomb
MAX_BYTES = 50 * 1024 * 1024  # per image, read from a file, stdin or a URL
URL_SECONDS = 20.0  # to fetch an http(s) image, connection and body together
STDIN = "-"
_DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+)?(;[a-z0-9=.+-]+)*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class ImageInput:
    """One checked image: where it came from (for messages and records) and the SHA-256 of its bytes
    (for the run record, so a changed image is a different run).

    The pixels are decoded again when the model needs them (``pixels()``), not kept: a batch of
    thousands of photos would otherwise hold them all at once. A file is read again then (and must
    still be what was checked); bytes from stdin or a URL are kept as they came, compressed.
    """

    name: str
    digest: str
    path: str | None = None
    data: bytes | None = field(default=None, compare=False, repr=False)

    def pixels(self):
        """The image as an upright RGB PIL image."""
        data = self.data if self.data is not None else _file_bytes(self.path, self.name)
        if self.data is None and hashlib.sha256(data).hexdigest() != self.digest:
            raise InputError(f"{self.name} changed while gptcli was running; run again")
        return _decoded(data, self.name)


def read_image(source: str, where: str = "--image") -> ImageInput:
    """The image at ``source``: a path, ``-`` for stdin, a data URL, or an http(s) URL, checked.

    Raises:
        InputError: unreadable, not an image, an unsupported format, too many pixels, too large,
            or a URL that cannot be fetched; the message names ``where`` and the source.
    """
    name = _shown(source)
    data = _read_bytes(source, f"{where} {name}")
    is_file = source != STDIN and not is_data_url(source) and not source.lower().startswith(("http://", "https://"))
    return checked_image(data, f"{where} {name}", name, path=source if is_file else None)


def checked_image(data: bytes, where: str, name: str, path: str | None = None) -> ImageInput:
    """Check image bytes by decoding them once (see the module's rules); ``where`` names them in errors."""
    _decoded(data, where)
    return ImageInput(name, hashlib.sha256(data).hexdigest(), path, None if path else data)


def _decoded(data: bytes, where: str):
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    if len(data) > MAX_BYTES:
        raise InputError(f"{where}: {len(data):,} bytes, more than the {MAX_BYTES // 2**20} MiB an image may be")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            _check_canvas(image, where)
            image.load()  # decodes it all: a truncated or corrupt file fails here, not inside the model
            return ImageOps.exif_transpose(image).convert("RGB")
    except UnidentifiedImageError:
        raise InputError(f"{where}: not an image in a supported format ({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError:
        raise InputError(f"{where}: more than {MAX_PIXELS:,} pixels; resize it first") from None
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for damaged data
        raise InputError(f"{where}: cannot be decoded ({_first_line(exc)}); is the file complete?") from None


def _check_canvas(image, where: str) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise InputError(f"{where}: an image of {width}x{height} pixels has nothing to see")
    if width * height > MAX_PIXELS:
        raise InputError(f"{where}: {width}x{height} is {width * height:,} pixels, more than the "
                         f"{MAX_PIXELS:,} allowed; resize it first")


def _read_bytes(source: str, where: str) -> bytes:
    if source == STDIN:
        from gptcli import textio

        data = textio.read_stdin_bytes()
        if not data:
            raise InputError(f"{where}: stdin is empty; pipe the image in (gptcli generate PROMPT --image - < a.png)")
        return data
    if _DATA_URL.match(source):
        return _data_url_bytes(source, where)
    if source.lower().startswith(("http://", "https://")):
        return fetch_url(source, where)
    return _file_bytes(source, where)


def _file_bytes(source: str, where: str) -> bytes:
    path = Path(source).expanduser()
    try:
        if not path.is_file():
            raise InputError(f"{where}: no such file" if not path.exists() else f"{where}: not a file")
        if path.stat().st_size > MAX_BYTES:
            raise InputError(f"{where}: {path.stat().st_size:,} bytes, more than the {MAX_BYTES // 2**20} MiB "
                             f"an image may be")
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{where}: cannot be read ({exc.strerror})") from None


def _data_url_bytes(source: str, where: str) -> bytes:
    encoded = source[source.index(",") + 1:]
    if len(encoded) > MAX_BYTES * 4 // 3 + 4:
        raise InputError(f"{where}: more than the {MAX_BYTES // 2**20} MiB an image may be")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: the data URL is not valid base64") from None


def fetch_url(url: str, where: str, seconds: float = URL_SECONDS, limit: int = MAX_BYTES) -> bytes:
    """The body at an http(s) URL, at most ``limit`` bytes, within ``seconds`` (each socket wait).

    Raises:
        InputError: unreachable (offline?), an HTTP error status, too large or too slow.
    """
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "gptcli"})
    try:
        with urllib.request.urlopen(request, timeout=seconds) as response:
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise InputError(f"{where}: {int(declared):,} bytes, more than the {limit // 2**20} MiB an "
                                 f"image may be")
            data = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise InputError(f"{where}: the server answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"{where}: cannot be fetched ({reason}); offline? download it and give the file") from None
    if len(data) > limit:
        raise InputError(f"{where}: more than the {limit // 2**20} MiB an image may be")
    return data


def data_url(image: ImageInput) -> str:
    """The image's own bytes as a ``data:`` URL, for a server (``--server``): the file is read again
    and must still be what was checked."""
    import io

    from PIL import Image

    data = image.data if image.data is not None else _file_bytes(image.path, image.name)
    if image.data is None and hashlib.sha256(data).hexdigest() != image.digest:
        raise InputError(f"{image.name} changed while gptcli was running; run again")
    with Image.open(io.BytesIO(data), formats=FORMATS) as opened:  # the header only: checked already
        mime = Image.MIME.get(opened.format, "image/png")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def is_data_url(source: str) -> bool:
    return bool(_DATA_URL.match(source))


def _shown(source: str) -> str:
    """The source as messages name it: a data URL by its start only."""
    if is_data_url(source):
        return source[:source.index(",")] + ",..."
    return source if len(source) <= 120 else source[:117] + "..."


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
