"""A GGUF file's weights recast once into another type for llama.cpp (``--engine llama.cpp --dtype``).

The packaged default model stores 4-bit weights: fastest for one stream, which reads every weight
once per token. A batch computes many rows per read instead, and there llama.cpp's bfloat16 and
float16 products (tiled, and with AVX-512 BF16 native) outrun its 4-bit ones two- to threefold on
this kind of CPU (README "Engines"). llama.cpp itself writes the copy (``llama_model_quantize``),
which dequantizes each 4-bit block exactly and rounds once, to the type asked for. Written under a
temporary name and renamed, under a lock, in gptcli's cache, like the transformers conversion.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from gptcli import console
from gptcli.errors import GptcliError
from gptcli.models.cache import cache_dir, cache_error, make_folder
from gptcli.models.convert import exclusive_lock

# llama.h's llama_ftype values
FILE_TYPES = {"float32": 0, "float16": 1, "bfloat16": 32}


def recast_gguf(gguf: Path, dtype: str) -> Path:
    """The cached copy of ``gguf`` with its weights in ``dtype`` (a FILE_TYPES key), made first if needed."""
    target = _target_for(gguf, dtype)
    if target.is_file():
        return target
    make_folder(target.parent)
    with exclusive_lock(target.with_name(target.name + ".lock")):
        if target.is_file():  # another process wrote it while we waited
            return target
        started = time.perf_counter()
        with console.status(f"Writing {gguf.name} in {dtype} once for llama.cpp ..."):
            _write(gguf, dtype, target)
        console.info(f"wrote {gguf.name} in {dtype} in {time.perf_counter() - started:.1f} s (cached in {target})")
    return target


def _target_for(gguf: Path, dtype: str) -> Path:
    stat = gguf.stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{int(stat.st_mtime)}|{dtype}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir() / "models" / f"{gguf.stem.lower().replace('.', '-')}-{dtype}-{digest}.gguf"


def _write(gguf: Path, dtype: str, target: Path) -> None:
    import llama_cpp

    from gptcli.engine.llamacpp_native import default_threads, route_log

    route_log(llama_cpp, console.is_verbose())  # its per-tensor lines with -v only

    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FILE_TYPES[dtype]
    params.allow_requantize = True  # the source is quantized already: dequantize it, then store dtype
    params.nthread = default_threads()
    try:
        status = llama_cpp.llama_model_quantize(str(gguf).encode(), str(tmp).encode(), params)
        if status != 0:
            raise GptcliError(f"llama.cpp could not write {gguf.name} in {dtype} (status {status}); "
                              "use --dtype auto or --engine transformers")
        os.rename(tmp, target)
    except OSError as exc:
        raise cache_error(exc, tmp) from exc
    finally:
        tmp.unlink(missing_ok=True)
