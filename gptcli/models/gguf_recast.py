"""A GGUF file's weights recast once into another type for llama.cpp (``--engine llama.cpp --dtype``).

The packaged default model stores 4-bit weights: fastest for one stream, which reads every weight
once per token. A batch computes many rows per read instead, and there llama.cpp's bfloat16 and
float16 products (tiled, and with AVX-512 BF16 native) outrun its 4-bit ones two- to threefold on
this kind of CPU (README "Engines"). llama.cpp itself writes the copy (``llama_model_quantize``),
which dequantizes each 4-bit block exactly and rounds once, to the type asked for. Written under a
temporary name and renamed, under a lock, in gptcli's cache, like the transformers conversion.

Without --dtype, a small model in one of llama.cpp's plain block types (Q4_0, Q4_1, Q5_0, Q5_1,
Q8_0) runs a copy whose output projection alone is in bfloat16, where the CPU multiplies bfloat16
natively (see with_bfloat16_output): its layers are the file's own bytes.
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
# Files of one plain block type, which llama.cpp requantizes into the same bytes (checked after each copy).
PLAIN_BLOCK_TYPES = {2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1"}
GGML_BF16 = 30  # ggml_type of a bfloat16 tensor
FLOAT_TENSOR_TYPES = ("F32", "F16", "BF16")
# Below this share of the weights the output projection's type hardly moves a token's time.
OUTPUT_SHARE = 0.10
BF16_OUTPUT = "output-bfloat16"


def with_bfloat16_output(gguf: Path) -> Path:
    """``gguf`` itself, or its cached copy with the output projection in bfloat16 and every other
    tensor byte for byte the file's own.

    On SmolLM2-135M (Q4_1 layers, the output projection in Q8_0: 21% of the weights), 2 cores with
    AVX-512 BF16: as fast for one stream (108 against 109 tokens/s, runs alternated), and greedy agreement
    with float32 95.9% against 95.2%, since llama.cpp multiplies a quantized matrix by activations rounded
    to 8 bits, and a bfloat16 one by bfloat16 activations (README "Engines"). Only where that holds: a CPU with native
    bfloat16 products, a file of one plain block type (whose blocks requantize to themselves), and an
    output projection quantized and at least OUTPUT_SHARE of the weights (a small model's)."""
    from gptcli.models.placement import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        return gguf
    target = _target_for(gguf, BF16_OUTPUT)
    # Reading a GGUF's header takes seconds (its vocabulary): the answer is kept, a copy or a marker.
    as_is = target.with_name(target.name + ".as-is")
    if target.is_file() or as_is.is_file():
        return target if target.is_file() else gguf
    make_folder(target.parent)
    with exclusive_lock(target.with_name(target.name + ".lock")):
        if target.is_file() or as_is.is_file():  # another process decided while we waited
            return target if target.is_file() else gguf
        import gguf as gguf_format

        source = gguf_format.GGUFReader(str(gguf))  # read once: the check, the file type and the comparison
        if not _output_worth_recasting(source):
            _mark(as_is)
            return gguf
        started = time.perf_counter()
        try:
            with console.status(f"Writing {gguf.name}'s output projection in bfloat16 once for llama.cpp ..."):
                written = _write(gguf, BF16_OUTPUT, target, source=source)
        except GptcliError as exc:  # the copy is only faster arithmetic: the file itself still runs
            console.warn(f"{exc}; running {gguf.name} as it is")
            return gguf
        if not written:
            _mark(as_is)
            return gguf
        console.info(f"wrote {gguf.name} with its output projection in bfloat16 in "
                     f"{time.perf_counter() - started:.1f} s (cached in {target})")
    return target


def _mark(path: Path) -> None:
    """Leave the marker that spares the next run reading the header; without it, that run reads it again."""
    try:
        path.touch()
    except OSError:
        pass


def _output_worth_recasting(reader) -> bool:
    field = reader.get_field("general.file_type")
    if field is None or int(field.contents()) not in PLAIN_BLOCK_TYPES:
        return False
    tensors = {t.name: t for t in reader.tensors}
    output = tensors.get("output.weight") or tensors.get("token_embd.weight")  # tied: the embedding is the output
    if output is None or output.tensor_type.name in FLOAT_TENSOR_TYPES:
        return False
    return int(output.n_elements) >= OUTPUT_SHARE * sum(int(t.n_elements) for t in tensors.values())


def _only_output_differs(reader, copy: Path) -> bool:
    import gguf as gguf_format
    import numpy

    source = {t.name: t for t in reader.tensors}
    written = {t.name: t for t in gguf_format.GGUFReader(str(copy)).tensors}
    output = "output.weight" if "output.weight" in source else "token_embd.weight"
    return source.keys() == written.keys() and all(
        name == output or numpy.array_equal(numpy.asarray(t.data), numpy.asarray(written[name].data))
        for name, t in source.items())


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


def _write(gguf: Path, dtype: str, target: Path, source=None) -> bool:
    """Write the copy to ``target``; for BF16_OUTPUT (``source``: the file's GGUFReader), keep it only
    if its other tensors are the file's own bytes (False: nothing kept)."""
    import llama_cpp

    from gptcli.engine.llamacpp_native import default_threads, route_log

    route_log(llama_cpp, console.is_verbose())  # its per-tensor lines with -v only

    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    if dtype == BF16_OUTPUT:
        params.ftype = int(source.get_field("general.file_type").contents())  # the layers stay in the file's own type ...
        params.output_tensor_type = GGML_BF16  # ... the output projection (or tied embedding) in bfloat16
    else:
        params.ftype = FILE_TYPES[dtype]
    params.allow_requantize = True  # the source is quantized already: dequantize it, then store dtype
    params.nthread = default_threads()
    try:
        status = llama_cpp.llama_model_quantize(str(gguf).encode(), str(tmp).encode(), params)
        if status != 0:
            raise GptcliError(f"llama.cpp could not write {gguf.name} in {dtype} (status {status}); "
                              "use --dtype auto or --engine transformers")
        if source is not None and not _only_output_differs(source, tmp):
            console.log(f"llama.cpp changed other tensors of {gguf.name} than its output projection: "
                        "running the file as it is")
            return False
        os.rename(tmp, target)
        return True
    except OSError as exc:
        raise cache_error(exc, tmp) from exc
    finally:
        tmp.unlink(missing_ok=True)

