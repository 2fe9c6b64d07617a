"""llama.cpp's model and context, through llama-cpp-python's bindings to its C API.

Only the forward pass is llama.cpp's: token sequences in, the logits of their last positions out.
The context holds several sequences (llama.cpp's sequence ids, here "slots"), each with its own
cached keys and values, and one ``llama_decode`` call reads tokens of many of them at once: a
batch's rows decode together, and a new prompt's prefill joins the running rows' next tokens.
A slot keeps the last sequence run in it after it is given back, so the next sequence that starts
with it (the next decode step, a chat's next turn, label scoring after a shared prompt) reads only
its new tokens. Engines on several threads (a server's request worker and its task thread) share
one model: every call holds a lock, and a sequence that does not continue its slot's cache
rereads from where they part. Tokenizing, picking tokens, stop strings and detokenizing stay
gptcli's own (engine/llamacpp_engine.py), so a request's contract is the same whichever engine
runs it. The C API is used rather than ``llama_cpp.Llama``: that class runs one sequence and keeps
only the last position's logits, and scoring needs several.
"""

from __future__ import annotations

import threading
from pathlib import Path

from gptcli.errors import GptcliError

MIN_CONTEXT = 2048  # positions of a lone sequence; grown (rebuilt) in powers of two, up to the model's own
MIN_SLOT = 128  # positions of each of several sequences: a batch's rows are sized to its longest
BATCH = 512  # tokens per llama_decode call
GGML_TYPE_F32, GGML_TYPE_F16 = 0, 1  # ggml.h
FLASH_ATTENTION_OFF = 0  # llama.h: LLAMA_FLASH_ATTN_TYPE_DISABLED


class NativeModel:
    """A GGUF model loaded by llama.cpp, with a context of one or more sequences that grows on demand."""

    def __init__(self, path: Path, threads: int | None = None, verbose: bool = False):
        import llama_cpp

        route_log(llama_cpp, verbose)
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
        self.slots = 0  # sequences the context holds
        self.capacity = 0  # positions each of them may hold
        self.cached: list[list[int]] = []  # per slot: the sequence whose keys and values it holds
        self.claimed: set[int] = set()
        self.batch = llama_cpp.llama_batch_init(BATCH, 0, 1)
        self._lock = threading.RLock()

    # -- slots --------------------------------------------------------------------------------------
    def claim(self, sequence: list[int], room: int, most: int = 1) -> int | None:
        """A free slot for a sequence that may grow to ``room`` positions: the one whose cache shares
        the most with ``sequence``. The context grows to ``most`` slots when none is free (and to
        ``room`` positions); None when all ``most`` are taken."""
        with self._lock:
            free = [slot for slot in range(self.slots) if slot not in self.claimed]
            if not free and self.slots < most:
                self.reserve(min(most, max(1, 2 * self.slots)), room)
                free = [slot for slot in range(self.slots) if slot not in self.claimed]
            if not free:
                return None
            self.reserve(self.slots, room)
            slot = max(free, key=lambda s: _shared_prefix(self.cached[s], sequence, len(sequence)))
            self.claimed.add(slot)
            return slot

    def release(self, slot: int) -> None:
        """Give a slot back; its cache stays for the next sequence that starts the same way."""
        with self._lock:
            self.claimed.discard(slot)

    def move_down(self, slot: int) -> int:
        """Move a claimed slot's sequence into the lowest free slot below it, if any; the slot it is in now.
        llama.cpp splits a pass at each gap between the sequence ids it reads (a pass over 21 of 32
        slots with gaps took 134 ms here, over 32 without: 41 ms), so a batch keeps its rows packed."""
        with self._lock:
            lower = next((s for s in range(slot) if s not in self.claimed), None)
            if lower is None:
                return slot
            memory = self._lib.llama_get_memory(self.context)
            self._lib.llama_memory_seq_rm(memory, lower, -1, -1)
            self._lib.llama_memory_seq_cp(memory, slot, lower, -1, -1)
            self._lib.llama_memory_seq_rm(memory, slot, -1, -1)
            self.cached[lower], self.cached[slot] = self.cached[slot], []
            self.claimed.discard(slot)
            self.claimed.add(lower)
            return lower

    def reserve(self, slots: int, room: int) -> None:
        """Make the context hold at least ``slots`` sequences of ``room`` positions each. A rebuilt
        context has empty caches: the sequences running in it are reread on their next call."""
        with self._lock:
            if slots <= self.slots and room <= self.capacity:
                return
            slots, room = max(slots, self.slots), max(room, self.capacity)
            capacity = MIN_CONTEXT if slots == 1 else MIN_SLOT
            while capacity < room:
                capacity *= 2
            capacity = min(capacity, max(self.trained_context, room))
            self._build(slots, capacity)

    # -- running ------------------------------------------------------------------------------------
    def run(self, sequence: list[int], logits_for: int = 1, room: int = 0):
        """The logits of the last ``logits_for`` positions of ``sequence`` (a float32 array, a row
        each), in a slot of its own for the call. ``room``: the length it may grow to (a request's
        prompt and new tokens), so the context is not rebuilt halfway."""
        with self._lock:
            slot = self.claim(sequence, max(len(sequence), room), most=self.slots + 1)
            try:
                return self.run_slots([(slot, sequence, logits_for)])[0]
            finally:
                self.release(slot)

    def run_slots(self, items: list[tuple[int, list[int], int]]) -> list:
        """For each (slot, sequence, logits_for): the logits of the sequence's last ``logits_for``
        positions, all read in shared llama_decode calls; afterwards each slot holds its sequence."""
        with self._lock:
            memory = self._lib.llama_get_memory(self.context)
            feeds = []
            for slot, sequence, logits_for in items:
                kept = _shared_prefix(self.cached[slot], sequence, len(sequence) - logits_for)
                self._lib.llama_memory_seq_rm(memory, slot, kept, -1)
                self.cached[slot] = []  # until the decode succeeds, the slot holds nothing known
                feeds.append((slot, sequence[kept:], kept, logits_for))
            rows = self._decode(feeds)
            for slot, sequence, _ in items:
                self.cached[slot] = list(sequence)
            return rows

    def _decode(self, feeds: list[tuple[int, list[int], int, int]]) -> list:
        """Feed each (slot, tokens, start, logits_for) at positions start...; per feed, the logits
        of its last ``logits_for`` tokens (a float32 array, one row each)."""
        import numpy as np

        flat = [(slot, token, start + index, index >= len(tokens) - wanted, n)
                for n, (slot, tokens, start, wanted) in enumerate(feeds) for index, token in enumerate(tokens)]
        rows: list[list] = [[] for _ in feeds]
        for offset in range(0, len(flat), BATCH):
            chunk = flat[offset:offset + BATCH]
            self._fill(chunk)
            status = self._lib.llama_decode(self.context, self.batch)
            if status != 0:
                raise GptcliError(f"llama.cpp failed to run the model (status {status}); use --engine transformers")
            for index, (_slot, _token, _position, wanted, n) in enumerate(chunk):
                if wanted:
                    pointer = self._lib.llama_get_logits_ith(self.context, index)
                    rows[n].append(np.ctypeslib.as_array(pointer, shape=(self.vocab_size,)).copy())
        return [np.stack(found) for found in rows]

    def _fill(self, chunk: list[tuple]) -> None:
        batch = self.batch
        batch.n_tokens = len(chunk)
        for index, (slot, token, position, wanted, _n) in enumerate(chunk):
            batch.token[index] = token
            batch.pos[index] = position
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = slot
            batch.logits[index] = wanted

    # -- the context ---------------------------------------------------------------------------------
    def _build(self, slots: int, capacity: int) -> None:
        self._free_context()
        params = self._lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = capacity * slots, BATCH, BATCH
        params.n_seq_max = slots
        params.kv_unified = False  # a stream per sequence: each token attends over its own row only
        params.n_threads = params.n_threads_batch = self.threads
        params.no_perf = True
        params.type_k = params.type_v = GGML_TYPE_F32 if self.exact else GGML_TYPE_F16
        if self.exact:
            params.flash_attn_type = FLASH_ATTENTION_OFF  # it rounds through float16 on the CPU
        self.context = self._lib.llama_init_from_model(self.model, params)
        if not self.context:
            raise GptcliError(f"llama.cpp could not make a context of {slots} x {capacity} tokens; lower "
                              "--max-new-tokens or --batch-size, or use --engine transformers")
        self.slots, self.capacity = slots, capacity
        self.cached = [[] for _ in range(slots)]

    def _all_float32(self) -> bool:
        """A float32 GGUF is run without rounding anywhere (float32 keys and values, no flash attention),
        as transformers runs it in float32; others keep llama.cpp's defaults (float16 cache, half the memory)."""
        import ctypes

        buffer = ctypes.create_string_buffer(32)
        length = self._lib.llama_model_meta_val_str(self.model, b"general.file_type", buffer, len(buffer))
        return length > 0 and buffer.value == b"0"  # LLAMA_FTYPE_ALL_F32

    def _free_context(self) -> None:
        if self.context:
            self._lib.llama_free(self.context)
            self.context, self.slots, self.capacity, self.cached = None, 0, 0, []

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


def route_log(llama_cpp, verbose: bool) -> None:
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

