"""Convert a GGUF file once into a plain model folder in the gptcli cache.

Loading a GGUF through transformers de-quantizes every tensor on each start
(about 15 s for SmolLM2 on 2 cores) and yields a model that can be neither
saved nor trained. We de-quantize once, store the plain weights (bf16), and
later runs load that folder in well under a second. The 4-bit codes of the
layers that had them are stored beside it, for CPU decoding (see int4.py).

The folder is built under a temporary name and renamed into place, so a crash
never leaves a half-written folder that later runs would trust; a file lock
keeps two processes from converting the same file at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gptcli import console
from gptcli.errors import InputError
from gptcli.models.cache import cache_dir, cache_error, make_folder
from gptcli.models.placement import LOAD_OUT_OF_MEMORY_HINT, is_out_of_memory, out_of_memory_error

CONVERSION_VERSION = 2  # bump when the folder layout changes, to force a fresh conversion (2: int4 codes)
MARKER = "gptcli-conversion.json"
STORED_DTYPE = "bfloat16"  # half the disk of fp32; see placement.py for the CPU speed measure


def converted_folder(gguf: Path) -> Path:
    """The cached plain folder for a GGUF file, converting it first if needed."""
    target = _target_for(gguf)
    if (target / MARKER).is_file():
        return target
    make_folder(target.parent)
    with exclusive_lock(target.with_name(target.name + ".lock")):
        if (target / MARKER).is_file():  # another process finished it while we waited
            return target
        _remove_leftovers(target)
        started = time.perf_counter()
        with console.status(f"Converting {gguf.name} once into {target} ..."):
            _convert_into(gguf, target)
        console.info(f"converted {gguf.name} in {time.perf_counter() - started:.1f} s "
                     f"(cached in {target}; later runs load it directly)")
    return target


def _target_for(gguf: Path) -> Path:
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{int(stat.st_mtime)}|{CONVERSION_VERSION}|{STORED_DTYPE}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    stem = gguf.stem.lower().replace(".", "-")
    return cache_dir() / "models" / f"{stem}-{STORED_DTYPE}-{digest}"


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    try:
        handle = open(path, "a+")
    except OSError as exc:  # a read-only cache: the folder exists, but nothing can be written in it
        raise cache_error(exc, path) from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(target: Path) -> None:
    """Temporary folders of conversions that died: we hold the lock, so nobody owns them."""
    for stale in target.parent.glob(f".tmp-{target.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if target.exists():  # a folder without its marker was never completed
        shutil.rmtree(target, ignore_errors=True)


def _convert_into(gguf: Path, target: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from gptcli.models import int4

    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    except Exception as exc:  # a damaged file fails in many ways (struct.error, IndexError, ValueError ...)
        if is_out_of_memory(exc):  # a sound file too big for this machine is not bad input
            raise out_of_memory_error(f"reading {gguf.name}", exc, LOAD_OUT_OF_MEMORY_HINT) from exc
        raise InputError(f"{gguf}: cannot read this GGUF file ({_first_line(exc)}); "
                         f"it may be truncated or of an architecture transformers cannot load") from None
    # A plain model of the same config (no quantization_config) can be saved and trained.
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    four_bit = int4.find_4bit_layers(plain)  # from the fp32 values, before bf16 rounding blurs the grid
    plain = plain.to(getattr(torch, STORED_DTYPE))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if four_bit:
            save_file(four_bit, str(tmp / int4.SIDECAR))
        (tmp / MARKER).write_text(json.dumps({"source": str(gguf), "dtype": STORED_DTYPE,
                                              "version": CONVERSION_VERSION,
                                              "int4_layers": len(four_bit) // 3}))
        os.rename(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise cache_error(exc, tmp) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
