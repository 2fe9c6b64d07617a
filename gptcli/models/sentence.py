"""A sentence-transformers model's own recipe for its vectors, read from the files beside its weights.

sentence-transformers keeps how a model's token states become one vector outside config.json:
``modules.json`` lists the steps (Transformer, Pooling, Normalize ...), ``1_Pooling/config.json``
names the pooling, ``sentence_bert_config.json`` the length it was set up for, and
``config_sentence_transformers.json`` a default prompt. Reading them here (JSON only, no torch)
lets gptcli make the vectors the model's authors intended, and refuse the steps it cannot run
instead of giving other vectors under the same name.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from gptcli.errors import InputError
from gptcli.models.resolve import ModelSource

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# The pooling config's older form: one flag per mode, concatenated in this order when several are on.
_LEGACY_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                 "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_STEPS_RUN = ("Transformer", "Pooling", "Normalize")  # modules.json steps gptcli reproduces


@dataclass(frozen=True)
class SentenceConfig:
    """What a sentence-transformers model folder says about its vectors."""

    pooling: tuple[str, ...]  # POOLING_MODES, concatenated in this order
    normalize: bool  # a Normalize step: unit-length vectors
    max_tokens: int | None = None  # sentence_bert_config.json's max_seq_length
    lowercase: bool = False  # do_lower_case: texts are lower-cased before tokenizing
    prompt: str = ""  # the default prompt, put before every text


@functools.lru_cache(maxsize=16)
def sentence_config(source: ModelSource) -> SentenceConfig | None:
    """The model's sentence-transformers recipe, or None when it has none (a plain encoder).

    Raises:
        InputError: a file of the recipe is damaged, or it asks for a step gptcli does not run
            (a Dense projection, a LayerNorm ...): its vectors would not be the model's.
    """
    files = _ModelFiles(source)
    steps = files.json("modules.json")
    if steps is None:
        return None
    where = files.where("modules.json")
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        raise InputError(f"{where}: expected a list of modules; the model folder is damaged")
    kinds = [str(step.get("type", "")).rsplit(".", 1)[-1] for step in steps]
    for kind, step in zip(kinds, steps):
        if kind not in _STEPS_RUN:
            raise InputError(f"{source.spec}: its modules.json has a {kind or 'nameless'} step "
                             f"({step.get('path') or step.get('name')}), which gptcli does not run, so its vectors "
                             f"would not be the model's; use sentence-transformers for this model")
    if "Pooling" not in kinds:
        raise InputError(f"{where}: no Pooling step, so the model gives no sentence vector; use another model")
    pooling_path = steps[kinds.index("Pooling")].get("path") or "1_Pooling"
    pooling = _pooling(files, f"{pooling_path}/config.json")
    bert = files.json("sentence_bert_config.json") or {}
    return SentenceConfig(pooling, "Normalize" in kinds, _positive_int(bert.get("max_seq_length")),
                          bool(bert.get("do_lower_case", False)), _default_prompt(files))


def _pooling(files: "_ModelFiles", name: str) -> tuple[str, ...]:
    config = files.json(name)
    if not isinstance(config, dict):
        raise InputError(f"{files.where(name)}: missing or not a JSON object; the model folder is damaged")
    if "pooling_mode" in config:
        given = config["pooling_mode"]
        modes = (given,) if isinstance(given, str) else tuple(given or ())
    else:
        modes = tuple(mode for flag, mode in _LEGACY_FLAGS.items() if config.get(flag))
    modes = modes or ("mean",)  # sentence-transformers' own default
    for mode in modes:
        if mode not in POOLING_MODES:
            raise InputError(f"{files.where(name)}: unknown pooling {mode!r}; gptcli knows {', '.join(POOLING_MODES)}")
    if config.get("include_prompt") is False and _default_prompt(files):
        raise InputError(f"{files.where(name)}: pooling leaves out the prompt's tokens, which gptcli does not do; "
                         f"use sentence-transformers for this model")
    return modes


def _default_prompt(files: "_ModelFiles") -> str:
    config = files.json("config_sentence_transformers.json") or {}
    name = config.get("default_prompt_name")
    prompt = (config.get("prompts") or {}).get(name) if name else None
    return prompt if isinstance(prompt, str) else ""


def _positive_int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class _ModelFiles:
    """The small files of a model folder, or of a hub model (fetched into the hub cache)."""

    def __init__(self, source: ModelSource):
        self.source = source
        self.folder = source.folder

    def where(self, name: str) -> str:
        return str(self.folder / name) if self.folder is not None else f"{self.source.hub_id}/{name}"

    def json(self, name: str):
        path = self._path(name)
        if path is None:
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{self.where(name)}: not valid JSON ({exc}); the model folder is damaged") from None

    def _path(self, name: str) -> Path | None:
        if self.folder is not None:
            path = self.folder / name
            return path if path.is_file() else None
        if self.source.hub_id is None:  # a GGUF file: no sentence-transformers files beside it
            return None
        return _hub_file(self.source.hub_id, name)


def _hub_file(hub_id: str, name: str) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    from gptcli import console
    from gptcli.models.resolve import _hub_cache_dir

    try:
        return Path(hf_hub_download(hub_id, name, cache_dir=_hub_cache_dir()))
    except LocalEntryNotFoundError:  # offline, and not cached
        if _model_is_cached(hub_id):  # the model will load: say so, rather than pool differently in silence
            console.warn(f"{hub_id}: {name} is not in the local cache and the hub cannot be reached; "
                         f"going by what the cache holds")
    except EntryNotFoundError:  # the model has no such file
        pass
    except Exception as exc:  # a network or permission failure: the load itself will say more
        console.warn(f"{hub_id}: could not fetch {name} ({type(exc).__name__}); going without it")
    return None


def _model_is_cached(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    from gptcli.models.resolve import _hub_cache_dir

    return isinstance(try_to_load_from_cache(hub_id, "config.json", cache_dir=_hub_cache_dir()), str)
