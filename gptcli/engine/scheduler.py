"""Continuous batching for transformers causal LMs.

Requests wait in a queue and join the running batch as soon as a row is free: each step
prefills the newly admitted prompts (in one padded pass), copies their keys and values
into free rows of the batch's SlotCache, then decodes one token for every running row.
A row that ends (EOS, a stop string, its limit, a cancel) frees its row at once, so a
batch whose outputs differ in length never decodes padding for rows that are done.

Models whose cache cannot hold rows of different ages (sliding windows, linear attention)
run in fixed batches on their own cache: a batch is admitted only when the last one ended.

A prompt with images (a vision model's request with ``inputs``) is prefilled on its own, its
pixel tensors beside its ids, then decodes in the running batch like any row: after the
prefill its image lives in the KV cache, and the steps that follow feed tokens only.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Hashable

from gptcli.engine.api import FINISH_CANCELLED, drop_queued, Event, GenerationStats, Request
from gptcli.engine.picking import Picking
from gptcli.engine.rows import Row
from gptcli.engine.shapes import power_of_two_groups, row_bucket, width_bucket

MIN_HEADROOM = 64  # columns kept free past the packed rows when the cache is rebuilt


class Scheduler:
    """Runs requests on one loaded causal LM, ``batch_size`` rows at a time.

    ``max_batch_tokens`` bounds rows x (prompt + new tokens) of the running batch (its KV
    cache and prefill activations); None bounds rows only. One row always runs, however long.
    """

    def __init__(self, lm, batch_size: int, max_batch_tokens: int | None = None,
                 stats: GenerationStats | None = None):
        from gptcli.engine.kvcache import reserved_cache_for

        self.lm, self.model, self.tokenizer = lm, lm.model, lm.tokenizer
        self.device = lm.model.device
        self.batch_size = max(1, batch_size)
        self.max_batch_tokens = max_batch_tokens
        self.eos_ids = eos_ids(lm)
        self.pad_id = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else (
            min(self.eos_ids) if self.eos_ids else 0)
        self.joinable = reserved_cache_for(lm.model, 1) is not None
        self.pending: deque[Request] = deque()
        self.slots: list[Row | None] = []
        self.cache = None
        self.mask = None  # rows x capacity: 1 where a row's own tokens are
        self.stats = stats if stats is not None else GenerationStats()
        self._cancelled: set[Hashable] = set()
        self.picking = Picking(lm, self.device, self.pad_id, self.eos_ids, self.stats)

    # -- the queue ---------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        self.pending.append(request)

    def cancel(self, request_id: Hashable) -> None:
        self._cancelled.add(request_id)

    def has_work(self) -> bool:
        return bool(self.pending) or any(row is not None for row in self.slots)

    @property
    def running(self) -> int:
        return sum(row is not None for row in self.slots)

    # -- one step ----------------------------------------------------------------------------
    def step(self) -> list[Event]:
        import torch

        started = time.perf_counter()
        events: list[Event] = []
        self._drop_cancelled(events)
        with torch.inference_mode():
            admitted = self._admissions()
            for group in self._prefill_groups(admitted):
                self._prefill(group, events)
            if self.running:
                self._decode(events)
        self._tidy()
        self.stats.decode_seconds += time.perf_counter() - started
        return events

    def _drop_cancelled(self, events: list[Event]) -> None:
        if not self._cancelled:
            return
        drop_queued(self.pending, self._cancelled, events)
        for index, row in enumerate(self.slots):
            if row is not None and row.request.id in self._cancelled:
                events.append(row.finished(FINISH_CANCELLED))
                self._free(index)
        self._cancelled.clear()

    def _prefill_groups(self, admitted: list[Request]) -> list[list[Request]]:
        """A fixed batch is one prefill; rows that join a running batch come in power-of-two groups;
        a prompt with images comes alone (its pixel tensors are its own)."""
        if not admitted:
            return []
        if not self.joinable:
            return [admitted]
        with_images = [[r] for r in admitted if r.inputs]
        return power_of_two_groups([r for r in admitted if not r.inputs]) + with_images

    # -- admission ---------------------------------------------------------------------------
    def _admissions(self) -> list[Request]:
        """The queued requests that join now: in queue order, while rows and the token budget allow."""
        if not self.pending or (not self.joinable and self.running):
            return []
        running = [row.request for row in self.slots if row is not None]
        widest = max((_reach(r) for r in running), default=0)
        chosen: list[Request] = []
        while self.pending and len(running) + len(chosen) < self.batch_size:
            request = self.pending[0]
            if not self.joinable and (request.inputs or any(r.inputs for r in chosen)) and chosen:
                break  # a fixed batch with a prompt with images holds that prompt alone
            width = max(widest, _reach(request))
            rows = len(running) + len(chosen) + 1
            if self.max_batch_tokens and rows > 1 and rows * width > self.max_batch_tokens:
                break
            chosen.append(self.pending.popleft())
            widest = width
        return chosen

    def _prefill(self, requests: list[Request], events: list[Event]) -> None:
        from gptcli.engine.kvcache import ReservedCache, reserved_cache_for, returned_cache

        widest = max(len(r.ids) for r in requests)
        ids, attention = left_pad([list(r.ids) for r in requests], self.pad_id, self.device, width_bucket(widest))
        width = ids.shape[1]
        if self.joinable:
            cache = ReservedCache(self._num_layers(), width)
        else:
            cache = reserved_cache_for(self.model, width + max(r.max_new_tokens for r in requests))
        extra = prefill_inputs(requests[0].inputs.tensors(), width, self.device, self.model.dtype) \
            if requests[0].inputs else {}
        positions, offsets = self._prefill_positions(ids, attention, extra)
        out = self._forward(ids, attention, positions, cache, extra)
        cache = returned_cache(out)
        rows = [self.picking.new_row(request, len(request.ids) - 1 + offset) for request, offset in zip(requests, offsets)]
        self.stats.prompt_tokens += sum(len(r.ids) for r in requests)
        alive = self.picking.advance(rows, out.logits[:, -1, :], events)
        if self.joinable:
            self._place(rows, alive, cache, attention, width)
        else:
            self.slots = [row if i in alive else None for i, row in enumerate(rows)]
            self.cache, self.mask = cache, attention

    def _prefill_positions(self, ids, attention, extra: dict) -> tuple:
        """Position ids for the prefill, and each row's offset to its length for the tokens after it:
        0, but for images on a model with 3-D positions (engine/mrope.py)."""
        if extra:
            from gptcli.engine.mrope import image_positions

            placed = image_positions(self.model, ids, attention, extra)
            if placed is not None:
                return placed
        return positions_of(attention), [0] * ids.shape[0]

    def _place(self, prefilled: list[Row], alive: list[int], prefill, attention, width: int) -> None:
        """Put the newly prefilled rows still running (``alive``) into free slots of the batch."""
        rows = [prefilled[i] for i in alive]
        if not rows:
            return
        from gptcli.engine.slots import SlotCache

        if self.cache is None:
            self.cache = SlotCache(self._num_layers())
        elif not self.running:  # nothing to keep: start at column 0, as a row alone does (same kernels, same
            self.cache.set_length(0)  # rounding in bfloat16: --batch-size 1 results depend on nothing else)
            self.mask.zero_()
        free = [i for i, row in enumerate(self.slots) if row is None]
        extra = len(rows) - len(free)
        newest = max(r.request.max_new_tokens for r in rows)
        needed = max(self.cache.length, width) + 1 + newest
        if extra > 0:
            self._resize(row_bucket(len(self.slots) + extra), max(needed, self.cache.capacity), prefill)
            free = [i for i, row in enumerate(self.slots) if row is None]
        elif needed > self.cache.capacity:
            self._compact(width, newest)
        length = max(self.cache.length, width)
        if length > self.cache.length:  # a prompt longer than the batch so far: every row gains masked columns
            self.cache.set_length(length)
        start = length - width  # right-aligned at the current column: the row continues where all others do
        targets = free[:len(rows)]
        self.cache.place(targets, prefill, alive, start)
        self.mask[targets] = 0
        self.mask[targets, start:length] = attention[alive]
        for slot, row in zip(targets, rows):
            self.slots[slot] = row

    def _resize(self, rows: int, capacity: int, like) -> None:
        import torch

        self.cache.resize(rows, capacity, like)
        mask = torch.zeros((rows, capacity), dtype=torch.long, device=self.device)
        if self.mask is not None:
            kept_rows, kept_cols = min(rows, self.mask.shape[0]), min(capacity, self.mask.shape[1])
            mask[:kept_rows, :kept_cols] = self.mask[:kept_rows, :kept_cols]
        self.mask = mask
        self.slots += [None] * (rows - len(self.slots))

    # -- decoding ----------------------------------------------------------------------------
    def _decode(self, events: list[Event]) -> None:
        import torch

        from gptcli.engine.kvcache import returned_cache

        if self.joinable and self.cache.length + 1 > self.cache.capacity:
            self._compact()
        if self._speculated(events):
            return
        tokens = [row.last if row else self.pad_id for row in self.slots]
        positions = [row.position if row else 0 for row in self.slots]
        ids = torch.tensor(tokens, device=self.device).unsqueeze(1)
        position_ids = torch.tensor(positions, device=self.device).unsqueeze(1)
        if self.joinable:
            length = self.cache.length
            self.mask[:, length] = 1  # free rows attend to their own pad: never a row with nothing to attend to
            attention = self.mask[:, :length + 1]
        else:
            self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.slots), 1))], dim=1)
            attention = self.mask
        out = self._forward(ids, attention, position_ids, self.cache)
        if not self.joinable:
            self.cache = returned_cache(out)
        live = [i for i, row in enumerate(self.slots) if row is not None]
        logits = out.logits[:, -1, :]
        alive = self.picking.advance([self.slots[i] for i in live], logits[live], events)
        for n, slot in enumerate(live):
            if n not in alive:
                self._free(slot)

    def _speculated(self, events: list[Event]) -> bool:
        """One pass over a lone row's next token and its guessed continuation (engine/speculative.py);
        False, having done nothing, where there is no guess or it would not pay."""
        from gptcli.engine import speculative

        live = [i for i, row in enumerate(self.slots) if row is not None]
        if not self.joinable or len(live) != 1 or len(self.slots) != 1 or not speculative.enabled():
            return False
        row, length = self.slots[0], self.cache.length
        draft = speculative.draft_for(row, self.cache.capacity - length)
        if not draft:
            return False
        import torch

        fed = [row.last, *draft]
        ids = torch.tensor([fed], device=self.device)
        positions = torch.arange(row.position, row.position + len(fed), device=self.device).unsqueeze(0)
        self.mask[:, length:length + len(fed)] = 1
        logits = self._forward_all(ids, self.mask[:, :length + len(fed)], positions)
        kept = 0
        for index in range(len(fed)):
            alive = self.picking.advance([row], logits[:, index, :], events)
            kept = index + 1  # fed tokens whose keys and values hold: the row's token and the guesses it took
            if not alive:
                self._free(0)
                break
            if index == len(draft) or row.last != draft[index]:
                break
        accepted = kept - 1
        self.cache.set_length(length + kept)
        self.mask[:, length + kept:length + len(fed)] = 0
        self.stats.drafted_tokens += len(draft)
        self.stats.accepted_tokens += accepted
        speculative.note_checked(row, len(draft), accepted)
        return True

    def _forward_all(self, ids, attention, positions):
        """The logits of every fed position."""
        from gptcli.engine.kvcache import cache_argument
        from gptcli.engine.lean_llama import lean_decoder

        lean = lean_decoder(self.model)
        if lean is not None:
            return lean.step(ids, attention, positions, self.cache).logits
        keep = {"logits_to_keep": ids.shape[1]} if last_logits_only(self.model) else {}
        out = self.model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True,
                         **{cache_argument(self.model): self.cache}, **keep)
        return out.logits[:, -ids.shape[1]:, :]

    # -- housekeeping --------------------------------------------------------------------------
    def _free(self, slot: int) -> None:
        self.slots[slot] = None

    def _tidy(self) -> None:
        """Give memory back when the batch has emptied, shrink it when the queue has run dry."""
        self.picking.forget_unused({r.sampling for r in self.pending} | {row.request.sampling for row in self.slots if row})
        if not self.joinable:
            if not self.running:
                self.slots, self.cache, self.mask = [], None, None
            return
        if not self.running and not self.pending:
            if self.cache is not None:
                self.slots, self.cache, self.mask = [], None, None
                give_back_freed_memory()
            return
        rows = row_bucket(self.running)
        if not self.pending and rows < len(self.slots):
            live = [i for i, row in enumerate(self.slots) if row is not None]
            keep = live + [i for i, row in enumerate(self.slots) if row is None][:rows - len(live)]
            self.cache.keep_rows(keep)
            self.mask = self.mask[keep]
            self.slots = [self.slots[i] for i in keep]

    def _compact(self, incoming_width: int = 0, incoming_new: int = 0) -> None:
        """Pack every running row's own columns to the right of a fresh buffer (the columns ran
        out), leaving room for the running rows to finish and for rows about to join."""
        import torch

        length = self.cache.length
        running = [row is not None for row in self.slots]
        counts = self.mask[:, :length].sum(dim=1) * torch.tensor(running, device=self.device)
        width = int(counts.max()) if len(self.slots) else 0
        columns = torch.zeros((len(self.slots), width), dtype=torch.long, device=self.device)
        mask = torch.zeros_like(columns)
        for r, row in enumerate(self.slots):
            if row is None:
                continue
            own = self.mask[r, :length].nonzero().squeeze(1)
            columns[r, width - own.numel():] = own
            mask[r, width - own.numel():] = 1
        remaining = [row.request.max_new_tokens - len(row.text.ids) for row in self.slots if row is not None]
        headroom = max(MIN_HEADROOM, incoming_new, *remaining)
        capacity = max(width, incoming_width) + headroom + 1
        self.cache.gather_columns(columns, capacity)
        self.mask = torch.zeros((len(self.slots), capacity), dtype=torch.long, device=self.device)
        self.mask[:, :width] = mask

    # -- the model ----------------------------------------------------------------------------
    def _forward(self, ids, attention, positions, cache, extra: dict | None = None):
        from gptcli.engine.kvcache import cache_argument
        from gptcli.engine.lean_llama import lean_decoder

        lean = lean_decoder(self.model) if ids.shape[1] == 1 and cache is not None else None
        if lean is not None:  # the same logits, fewer operators (engine/lean_llama.py)
            return lean.step(ids, attention, positions, cache)
        return self.model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True,
                          **{cache_argument(self.model): cache}, **last_logits_only(self.model), **(extra or {}))

    def _num_layers(self) -> int:
        config = self.model.config
        config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        return config.num_hidden_layers


def _reach(request: Request) -> int:
    return len(request.ids) + request.max_new_tokens


def left_pad(sequences: list[list[int]], pad_id: int, device, width: int | None = None):
    import torch

    width = max(max(len(ids) for ids in sequences), width or 0)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


# Processor outputs with one value per prompt token: left-padded with the prompt's ids.
PER_TOKEN_INPUTS = ("token_type_ids", "mm_token_type_ids")


def prefill_inputs(inputs: dict, width: int, device, dtype) -> dict:
    """A prompt's processor tensors on ``device``, pixels in the model's ``dtype``, those with a value
    per token left-padded (with 0) to the prefill's ``width``, as its ids are."""
    import torch

    placed = {}
    for name, value in inputs.items():
        if not isinstance(value, torch.Tensor):
            placed[name] = value
            continue
        if name in PER_TOKEN_INPUTS and value.shape[-1] < width:
            value = torch.nn.functional.pad(value, (width - value.shape[-1], 0))
        placed[name] = value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
    return placed


def positions_of(mask):
    """Each row's positions counted from 0 at its first real token (pads at 0, masked anyway).

    A left-padded row then gets the positions it has alone: models with absolute position
    embeddings (GPT-2) would otherwise read a shifted prompt (tests/test_batch_invariance.py).
    """
    return (mask.cumsum(-1) - 1).clamp(min=0)


def eos_ids(lm) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(lm.model, "generation_config", None), lm.model.config, lm.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def last_logits_only(model) -> dict:
    """Ask for the last position's logits only, when the model supports it (saves the
    prompt-length x vocabulary projection on the first step)."""
    import inspect

    cached = getattr(model, "_gptcli_logits_kw", None)
    if cached is None:
        cached = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        model._gptcli_logits_kw = cached
    return cached


def give_back_freed_memory() -> None:
    """Hand the heap's free pages back to the system (glibc keeps them otherwise): a batch's KV
    cache is hundreds of MiB, and an idle server should not hold the last big batch's forever."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing to ask
        pass
