"""llama.cpp's model and context, through llama-cpp-python's bindings to its C API.

Only the forward pass is llama.cpp's: a token sequence in, the logits of its last positions out.
The context caches the keys and values of the last sequence run, so the next one that starts
with it (the next decode step, a chat's next turn, label scoring after a shared prompt) reads
only its new tokens. Engines on several threads (a server's request worker and its task thread)
share one model: ``run`` holds a lock, and a sequence that does not continue the cached one
rereads from where they part. Tokenizing, picking tokens, stop strings and detokenizing stay
gptcli's own (engine/llamacpp_engine.py), so a request's contract is the same whichever engine
runs it. The C API is used rather than ``llama_cpp.Llama``: that class keeps only the last
position's logits, and scoring needs several.
"""

from __future__ import annotations

import threading
from pathlib import Path

from gptcli.errors import GptcliError

MIN_CONTEXT = 2048  # the context is grown (rebuilt) in powers of two past this, up to the model's own
BATCH = 512  # tokens per llama_decode call while reading a prompt
GGML_TYPE_F32, GGML_TYPE_F16 = 0, 1  # ggml.h
FLASH_ATTENTION_OFF = 0  # llama.h: LLAMA_FLASH_ATTN_TYPE_DISABLED


class NativeModel:
    """A GGUF model loaded by llama.cpp, with a context for one sequence that grows on demand."""

    def __init__(self, path: Path, threads: int | None = None, verbose: bool = False):
        import llama_cpp

        _route_log(llama_cpp, verbose)
        self._lib = llama_cpp
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0  # a CPU build; GPUs are transformers' (or vLLM's) work
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self.model:
            raise GptcliError(f"llama.cpp could not load {path}; run with -v to see why, or use --engine transformers")
        self.vocab_size = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        self.trained_context = llama_cpp.llama_model_n_ctx_train(self.model)
        self.threads = threads or default_threads()
        self.exact = self._all_float32()
        self.context = None
        self.capacity = 0
        self.batch = llama_cpp.llama_batch_init(BATCH, 0, 1)
        self.tokens: list[int] = []  # the sequence whose keys and values the context holds
        self._lock = threading.Lock()

    def run(self, sequence: list[int], logits_for: int = 1, room: int = 0):
        """The logits of the last ``logits_for`` positions of ``sequence`` (a float32 array, a row
        each); afterwards the cache holds ``sequence``. ``room``: the length it may grow to (a
        request's prompt and new tokens), so the context is not rebuilt halfway."""
        with self._lock:
            if self._reserve(max(len(sequence), room)):
                self.tokens = []
            kept = _shared_prefix(self.tokens, sequence, len(sequence) - logits_for)
            self._forget_from(kept)
            self.tokens = []  # until the decode succeeds, the cache holds nothing known
            logits = self._decode(sequence[kept:], kept, logits_for)
            self.tokens = list(sequence)
            return logits

    def _reserve(self, tokens: int) -> bool:
        """Make room for ``tokens`` positions; True when the context was rebuilt (its cache emptied)."""
        if tokens <= self.capacity:
            return False
        capacity = MIN_CONTEXT
        while capacity < tokens:
            capacity *= 2
        capacity = min(capacity, max(self.trained_context, tokens))
        self._free_context()
        params = self._lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = capacity, BATCH, BATCH, 1
        params.n_threads = params.n_threads_batch = self.threads
        params.no_perf = True
        params.type_k = params.type_v = GGML_TYPE_F32 if self.exact else GGML_TYPE_F16
        if self.exact:
            params.flash_attn_type = FLASH_ATTENTION_OFF  # it rounds through float16 on the CPU
        self.context = self._lib.llama_init_from_model(self.model, params)
        if not self.context:
            raise GptcliError(f"llama.cpp could not make a context of {capacity} tokens; lower --max-new-tokens "
                              "or use --engine transformers")
        self.capacity = capacity
        return True

    def _all_float32(self) -> bool:
        """A float32 GGUF is run without rounding anywhere (float32 keys and values, no flash attention),
        as transformers runs it in float32; others keep llama.cpp's defaults (float16 cache, half the memory)."""
        import ctypes

        buffer = ctypes.create_string_buffer(32)
        length = self._lib.llama_model_meta_val_str(self.model, b"general.file_type", buffer, len(buffer))
        return length > 0 and buffer.value == b"0"  # LLAMA_FTYPE_ALL_F32

    def _forget_from(self, position: int) -> None:
        """Drop the cached keys and values from ``position`` on."""
        memory = self._lib.llama_get_memory(self.context)
        self._lib.llama_memory_seq_rm(memory, 0, position, -1)

    def _decode(self, tokens: list[int], start: int, logits_for: int):
        """Feed ``tokens`` at positions ``start``...; the logits of the last ``logits_for`` of them
        (a float32 array, one row each), valid until the next call."""
        import numpy as np

        rows = []
        for offset in range(0, len(tokens), BATCH):
            chunk = tokens[offset:offset + BATCH]
            wanted = max(0, logits_for - (len(tokens) - offset - len(chunk)))  # of this chunk's last tokens
            self._fill(chunk, start + offset, wanted)
            status = self._lib.llama_decode(self.context, self.batch)
            if status != 0:
                raise GptcliError(f"llama.cpp failed to run the model (status {status}); use --engine transformers")
            for index in range(len(chunk) - wanted, len(chunk)):
                pointer = self._lib.llama_get_logits_ith(self.context, index)
                rows.append(np.ctypeslib.as_array(pointer, shape=(self.vocab_size,)).copy())
        return np.stack(rows)

    def _fill(self, tokens: list[int], start: int, wanted: int) -> None:
        batch = self.batch
        batch.n_tokens = len(tokens)
        for index, token in enumerate(tokens):
            batch.token[index] = token
            batch.pos[index] = start + index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = 0
            batch.logits[index] = index >= len(tokens) - wanted

    def _free_context(self) -> None:
        if self.context:
            self._lib.llama_free(self.context)
            self.context, self.capacity = None, 0

    def close(self) -> None:
        self._free_context()
        if self.batch is not None:
            self._lib.llama_batch_free(self.batch)
            self.batch = None
        if self.model:
            self._lib.llama_model_free(self.model)
            self.model = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


_LOG_CALLBACK = []  # the ctypes callback must outlive every call llama.cpp makes to it


def _route_log(llama_cpp, verbose: bool) -> None:
    """llama.cpp's log lines (loading, context warnings) to stderr only with -v: stderr carries gptcli's."""
    import sys

    def log(level, text, user_data):
        if verbose and text:
            sys.stderr.write(text.decode("utf-8", "replace"))

    callback = llama_cpp.llama_log_callback(log)
    _LOG_CALLBACK[:] = [callback]
    llama_cpp.llama_log_set(callback, None)


def load(path: Path) -> NativeModel:
    """llama.cpp's model for the GGUF file at ``path``, its log lines shown with -v only."""
    from gptcli import console

    return NativeModel(path, verbose=console.is_verbose())


def _shared_prefix(cached: list[int], sequence: list[int], most: int) -> int:
    """How many leading tokens ``sequence`` shares with ``cached``, at most ``most``."""
    most = max(0, min(most, len(cached)))
    if sequence[:most] == cached[:most]:  # the usual case (one more token), compared in C
        return most
    count = 0
    while count < most and cached[count] == sequence[count]:
        count += 1
    return count


def default_threads() -> int:
    """As many threads as torch uses: the cores, or OMP_NUM_THREADS where it is set (a run spread over
    processes sets it per process, so they do not fight over the cores)."""
    import torch

    return max(1, torch.get_num_threads())


def available() -> bool:
    """llama-cpp-python is installed (checked without importing it: that loads its library)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None

