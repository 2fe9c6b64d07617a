"""The llama.cpp engine: a GGUF model's rows decoded together at llama.cpp's pace, on a CPU.

On this kind of machine a lone stream is bound by reading the weights once per token, and
llama.cpp's quantized kernels read the GGUF's 4-bit weights directly (4.0-4.5x plain
transformers on the default model, README "Engines"). Several requests run as rows of one
batch, each in a slot (a sequence) of the model's context: each step feeds every running row's
next token and the prompts of rows joining, in shared llama_decode calls. llama.cpp computes the
logits only: the tokens are picked by gptcli's own samplers (engine/picking.py), so seeds,
penalties, stop strings, constraints, log-probabilities and token counts follow the same
contract on either engine, and a row's tokens do not depend on the rows beside it.

Requests start in submission order as slots free up. A slot keeps its sequence after its row
ends, so a request that starts with it (the next turn of a chat) reads only its new tokens.
Scoring (label log-probabilities for classify, token losses for perplexity) runs on the same
model, a sequence at a time.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Hashable

from gptcli.engine.api import FINISH_CANCELLED, drop_queued, Engine, Event, GenerationStats, Request
from gptcli.engine.picking import Picking

# Rows x positions one batch's slots may hold (their float16 keys and values: ~23 KiB a position
# on the default model); a lone row is not limited.
MAX_BATCH_POSITIONS = 8192


@dataclass
class _Running:
    row: object  # picking's Row
    slot: int
    sequence: list[int]  # the prompt and the tokens fed after it


class LlamaCppEngine(Engine):
    """An Engine over a LoadedModel whose weights came from a GGUF file (``lm.source.gguf``), running
    up to ``rows`` requests at once."""

    def __init__(self, lm, stats: GenerationStats | None = None, rows: int = 1):
        from gptcli.engine.scheduler import eos_ids

        self.lm = lm
        self.native = native_model(lm)
        self.rows = max(1, rows)
        self.stats = stats if stats is not None else GenerationStats()
        self.eos_ids = eos_ids(lm)
        pad = lm.tokenizer.pad_token_id
        self.picking = Picking(lm, "cpu", pad if pad is not None else 0, self.eos_ids, self.stats)
        self.pending: deque[Request] = deque()
        self.running: list[_Running] = []
        self.limit = self.rows  # rows the current batch may hold (_size_slots)
        self._cancelled: set[Hashable] = set()

    def submit(self, request: Request) -> None:
        if request.inputs:
            raise ValueError("the llama.cpp engine does not take images")
        self.pending.append(request)

    def cancel(self, request_id: Hashable) -> None:
        self._cancelled.add(request_id)

    def has_work(self) -> bool:
        return bool(self.pending) or bool(self.running)

    def step(self) -> list[Event]:
        started = time.perf_counter()
        events: list[Event] = []
        self._drop_cancelled(events)
        joining = self._admit()
        if self.running or joining:
            self._advance(joining, events)
        used = {r.sampling for r in self.pending} | {r.row.request.sampling for r in self.running}
        self.picking.forget_unused(used)
        self.stats.decode_seconds += time.perf_counter() - started
        return events

    def _drop_cancelled(self, events: list[Event]) -> None:
        if not self._cancelled:
            return
        drop_queued(self.pending, self._cancelled, events)
        for running in [r for r in self.running if r.row.request.id in self._cancelled]:
            events.append(running.row.finished(FINISH_CANCELLED))
            self._end(running)
        self._cancelled.clear()

    def _admit(self) -> list[_Running]:
        """Queued requests that get a slot now, in submission order, as new rows (not yet fed)."""
        joining: list[_Running] = []
        if self.pending and not self.running:
            self.limit = self._size_slots()
        while self.pending and len(self.running) + len(joining) < self.limit:
            request = self.pending[0]
            slot = self.native.claim(list(request.ids), _room(request), most=self.limit)
            if slot is None:
                break  # another engine on this model holds the slots: wait for them
            self.pending.popleft()
            self.stats.prompt_tokens += len(request.ids)
            joining.append(_Running(self.picking.new_row(request, len(request.ids)), slot, list(request.ids)))
        return joining

    def _size_slots(self) -> int:
        """Before a batch starts: slots for the queued requests that may run together, each sized for
        the longest of them, so the context is built once rather than grown row by row; the most
        rows this batch may hold (later requests, a server's, grow it up to that)."""
        ahead = list(self.pending)[:self.rows]
        room = max(_room(r) for r in ahead)
        limit = max(1, min(self.rows, MAX_BATCH_POSITIONS // room))
        self.native.reserve(min(len(ahead), limit), room)
        return limit

    def _advance(self, joining: list[_Running], events: list[Event]) -> None:
        """One pass: each running row's last token, each joining row's prompt; then every row's pick."""
        import torch

        for running in self.running:
            running.sequence.append(running.row.last)
        rows = sorted(self.running + joining, key=lambda r: r.slot)  # llama.cpp splits passes less so
        logits = self.native.run_slots([(r.slot, r.sequence, 1) for r in rows])
        alive = set(self.picking.advance([r.row for r in rows], torch.from_numpy(_last_rows(logits)), events))
        for n, running in enumerate(rows):
            if n not in alive:
                self._end(running)
        self.running = [r for n, r in enumerate(rows) if n in alive]
        if len(alive) < len(rows):
            self._pack()

    def _pack(self) -> None:
        """Rows that ended left gaps among the slots: move the rows above a gap down into it."""
        for running in sorted(self.running, key=lambda r: -r.slot):
            running.slot = self.native.move_down(running.slot)

    def _end(self, running: _Running) -> None:
        self.native.release(running.slot)
        if running in self.running:
            self.running.remove(running)

    # -- scoring ----------------------------------------------------------------------------------
    def prefix_scorer(self, prefix: list[int]):
        """Answers scored a sequence at a time; the shared prompt stays cached between them."""
        return _AnswerScorer(self.native)

    def token_losses(self, windows: list[tuple[list[int], int]]) -> list[list[float]]:
        import torch

        losses = []
        for ids, scored in windows:
            logits = torch.from_numpy(self.native.run(list(ids), logits_for=scored + 1)[:-1])  # each predicts the next
            targets = torch.tensor(ids[len(ids) - scored:])
            losses.append(torch.nn.functional.cross_entropy(logits, targets, reduction="none").tolist())
        return losses


class _AnswerScorer:
    def __init__(self, native):
        self.native = native

    def answer_logprobs(self, rows: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        """Each row's answer tokens' log-probabilities after its prompt."""
        import torch

        scores = []
        for prompt, answer in rows:
            logits = self.native.run(list(prompt) + list(answer), logits_for=len(answer) + 1)[:-1]
            logprobs = torch.from_numpy(logits).log_softmax(-1)
            scores.append(logprobs.gather(-1, torch.tensor(answer)[:, None])[:, 0].tolist())
        return scores


def _room(request: Request) -> int:
    """Positions a request may fill: its prompt, its new tokens and the last one fed."""
    return len(request.ids) + request.max_new_tokens + 1


def _last_rows(logits: list):
    """The last position's logits of each sequence, one row each."""
    import numpy as np

    return np.stack([rows[-1] for rows in logits])


def native_model(lm):
    """The llama.cpp model loaded with ``lm`` (--engine llama.cpp), or loaded now from its GGUF file
    and kept with it (a benchmark holding the same weights in both engines)."""
    if lm.native is None:
        from gptcli.engine.llamacpp_native import load

        lm.native = load(lm.source.gguf)
    return lm.native
