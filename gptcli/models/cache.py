"""Where gptcli keeps what it derives from models (converted GGUF folders)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """GPTCLI_CACHE, else $XDG_CACHE_HOME/gptcli, else ~/.cache/gptcli."""
    explicit = os.environ.get("GPTCLI_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "gptcli"
