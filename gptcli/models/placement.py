"""Choose the device and dtype a model runs on, with the reason (shown by --verbose)."""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

from gptcli.errors import GptcliError, UsageError

DTYPES = ("auto", "float32", "bfloat16", "float16", "int4")
# int4: a 4-bit GGUF model's layers kept 4-bit and run by torch's CPU int4 kernel on bf16
# activations (models/int4.py). Opt-in, not auto: its rounding differs from bf16's, and on
# near-tied tokens that changes greedy answers (measured in benchmarks/README.md).
INT4 = "int4"
DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"


@dataclass(frozen=True)
class Placement:
    device: str
    dtype_name: str  # what activations (and unpacked weights) are computed in
    reason: str
    int4: bool = False  # keep 4-bit layers packed (--dtype int4)
    engine: str | None = None  # set when another engine than transformers holds the weights

    @property
    def label(self) -> str:
        """The dtype as the user names it (--stats)."""
        return self.engine or ("int4" if self.int4 else self.dtype_name)

    @property
    def dtype(self):
        import torch

        return getattr(torch, self.dtype_name)


def choose_placement(device: str = "auto", dtype: str = "auto") -> Placement:
    """Resolve "auto" device/dtype for this machine.

    Raises:
        UsageError: an unknown dtype, or a device this machine does not have.
    """
    if dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == INT4:
        return _int4_placement(device)
    device, device_reason = _choose_device(device)
    if dtype != "auto":
        return Placement(device, dtype, f"{device_reason}; dtype {dtype} as asked")
    dtype, dtype_reason = _auto_dtype(device)
    return Placement(device, dtype, f"{device_reason}; {dtype_reason}")


def _int4_placement(device: str) -> Placement:
    if device not in ("auto", "cpu"):
        raise UsageError(f"--dtype int4 runs on the CPU only (torch's int4 kernel); drop --device {device} "
                         f"or use --dtype auto there")
    return Placement("cpu", "bfloat16", "device cpu; dtype int4 as asked (4-bit layers packed, bf16 activations)",
                     int4=True)


def _choose_device(device: str) -> tuple[str, str]:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda", "device cuda (a GPU is available)"
        if torch.backends.mps.is_available():
            return "mps", "device mps (Apple GPU)"
        return "cpu", "device cpu (no GPU found)"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA GPU is visible here; use --device cpu or auto")
    if device.startswith("cuda:"):
        _check_cuda_index(device, torch.cuda.device_count())
    if device == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: MPS is not available here; use --device cpu or auto")
    if not (device == "cpu" or device == "mps" or device.startswith("cuda")):
        raise UsageError(f"unknown --device {device!r}; choose {DEVICES_HELP}")
    return device, f"device {device} as asked"


def _check_cuda_index(device: str, count: int) -> None:
    index = device.split(":", 1)[1]
    if not index.isdigit():
        raise UsageError(f"unknown --device {device!r}; choose {DEVICES_HELP}")
    if int(index) >= count:
        raise UsageError(f"--device {device}: this machine has {count} CUDA GPU(s), numbered from 0; "
                         f"use --device cuda:0 or cuda")


def _auto_dtype(device: str) -> tuple[str, str]:
    import torch

    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return "bfloat16", "dtype bfloat16 (the GPU supports it)"
        return "float16", "dtype float16 (the GPU has no bfloat16)"
    if device == "mps":
        return "float16", "dtype float16 (MPS)"
    if cpu_has_native_bf16():
        # Measured on SmolLM2-135M (2 cores, AVX512-BF16): bf16 decodes 1.3-1.4x faster
        # than fp32 with token-identical greedy output (benchmarks/README.md).
        return "bfloat16", "dtype bfloat16 (the CPU has native bf16 instructions)"
    return "float32", "dtype float32 (the CPU has no native bf16, where bf16 is slower)"


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


# Out of memory is a runtime failure (exit 1), never bad input: the same run fits with fewer rows
# at once, narrower numbers, or on a machine with more memory.
OUT_OF_MEMORY_HINT = ("try a smaller --batch-size, a narrower --dtype (bfloat16; int4 for a 4-bit GGUF), "
                      "or a smaller model")
LOAD_OUT_OF_MEMORY_HINT = "try a narrower --dtype (bfloat16; int4 for a 4-bit GGUF), a smaller model, or free memory"


def is_out_of_memory(exc: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError (CUDA, MPS), the CPU allocator's failure (a RuntimeError),
    or an mmap that found no room (ENOMEM: pyarrow's OSError when `datasets` maps a table)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOMEM or "cannot allocate memory" in str(exc).lower()
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def out_of_memory_error(doing: str, exc: BaseException, hint: str = OUT_OF_MEMORY_HINT) -> GptcliError:
    """The one message for running out of memory while ``doing`` something (raise it ``from exc``)."""
    return GptcliError(f"out of memory while {doing}{_allocation_detail(exc)}; {hint}")


def _allocation_detail(exc: BaseException) -> str:
    match = re.search(r"allocate (\d+) bytes", str(exc))
    if match:
        return f" (an allocation of {int(match.group(1)) / 2**20:,.0f} MiB failed)"
    match = re.search(r"Tried to allocate ([\d.]+ [KMGT]iB)", str(exc))  # CUDA's wording
    return f" (an allocation of {match.group(1)} failed)" if match else ""
