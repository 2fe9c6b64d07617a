"""Where gptcli keeps what it derives from models (converted GGUF folders)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from gptcli.errors import GptcliError


def cache_dir() -> Path:
    """GPTCLI_CACHE, else $XDG_CACHE_HOME/gptcli, else ~/.cache/gptcli."""
    explicit = os.environ.get("GPTCLI_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gptcli"


def make_folder(folder: Path) -> Path:
    """Create ``folder`` inside the cache (with its parents).

    Raises:
        GptcliError: the cache is not a folder, or cannot be written (exit 1, naming the path and the fix).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cache_error(exc, folder) from exc
    return folder


def cache_error(exc: OSError, path: Path) -> GptcliError:
    """A one-line error for an OSError met while writing ``path`` inside the cache."""
    root = cache_dir()
    named = f"GPTCLI_CACHE={root}" if os.environ.get("GPTCLI_CACHE") else f"the gptcli cache {root}"
    blocking = _file_in_the_way(path)
    if blocking is not None:
        return GptcliError(f"{named} is not a folder: {blocking} is a file; set GPTCLI_CACHE to a folder "
                           f"(or move that file away)")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):  # a full disk, a quota, a file size limit
        return GptcliError(f"cannot write to {named} ({exc.strerror}: {exc.filename or path}); free some disk "
                           f"space or set GPTCLI_CACHE to a folder on another disk")
    return GptcliError(f"cannot write to {named} ({exc.strerror}: {exc.filename or path}); make it writable "
                       f"or set GPTCLI_CACHE to a folder you can write")


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (or itself) when it is not a folder."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return None if candidate.is_dir() else candidate
    return None
