"""What a model *is*, for telling whether results in an --output file came from it.

A resumed run must use the same model as the run that wrote the file. The name a
user typed is not enough: a folder can be fine-tuned again in place. So a local
model is named by its resolved path plus a fingerprint of its files (config and
weights by size and modification time: cheap, and it changes whenever they are
rewritten). A hub id is named as given. File system only: no torch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from gptcli.models.resolve import resolve

WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".json", ".jinja", ".model")


def model_identity(spec: str | None, adapter: str | None = None) -> str:
    """A short string that changes when the model (or its adapter) behind ``spec`` changes."""
    text = _one(spec)
    if adapter:
        text += f" + adapter {_one(adapter)}"
    return text


def _one(spec: str | None) -> str:
    source = resolve(spec)
    where = source.gguf or source.folder
    if where is None:
        return source.spec if source.spec == source.hub_id else f"{source.spec} ({source.hub_id})"
    name = source.spec if source.spec.lower() != str(where).lower() else str(where)
    return f"{name} ({where}, files {_fingerprint(Path(where))})"


def _fingerprint(where: Path) -> str:
    files = [where] if where.is_file() else sorted(p for p in where.iterdir()
                                                   if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]
