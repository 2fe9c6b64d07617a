"""The llama.cpp engine: one sequence at a time, at llama.cpp's pace, for a GGUF model on a CPU.

On this kind of machine a lone stream is bound by reading the weights once per token, and
llama.cpp's quantized kernels read the GGUF's 4-bit weights directly (4.0-4.5x plain
transformers on the default model, README "Engines"); batches stay with the transformers
scheduler, which computes many rows per read. llama.cpp computes the logits only: the tokens
are picked by gptcli's own samplers (engine/picking.py), so seeds, penalties, stop strings,
constraints, log-probabilities and token counts follow the same contract on either engine.

Requests run one after another in submission order. The cache keeps the last sequence, so a
request that starts with it (the next turn of a chat) reads only its new tokens. Scoring (label
log-probabilities for classify, token losses for perplexity) runs on the same model, a sequence
at a time.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Hashable

from gptcli.engine.api import FINISH_CANCELLED, drop_queued, Engine, Event, GenerationStats, Request
from gptcli.engine.picking import Picking


class LlamaCppEngine(Engine):
    """An Engine over a LoadedModel whose weights came from a GGUF file (``lm.source.gguf``)."""

    def __init__(self, lm, stats: GenerationStats | None = None):
        from gptcli.engine.scheduler import eos_ids

        self.lm = lm
        self.native = native_model(lm)
        self.stats = stats if stats is not None else GenerationStats()
        self.eos_ids = eos_ids(lm)
        pad = lm.tokenizer.pad_token_id
        self.picking = Picking(lm, "cpu", pad if pad is not None else 0, self.eos_ids, self.stats)
        self.pending: deque[Request] = deque()
        self.row = None
        self.sequence: list[int] = []  # the running row's prompt and the tokens fed after it
        self._cancelled: set[Hashable] = set()

    def submit(self, request: Request) -> None:
        if request.inputs:
            raise ValueError("the llama.cpp engine does not take images")
        self.pending.append(request)

    def cancel(self, request_id: Hashable) -> None:
        self._cancelled.add(request_id)

    def has_work(self) -> bool:
        return bool(self.pending) or self.row is not None

    def step(self) -> list[Event]:
        started = time.perf_counter()
        events: list[Event] = []
        self._drop_cancelled(events)
        if self.row is None and self.pending:
            self._prefill(self.pending.popleft(), events)
        elif self.row is not None:
            self._decode(events)
        self.picking.forget_unused({r.sampling for r in self.pending} | ({self.row.request.sampling} if self.row else set()))
        self.stats.decode_seconds += time.perf_counter() - started
        return events

    def _drop_cancelled(self, events: list[Event]) -> None:
        if not self._cancelled:
            return
        drop_queued(self.pending, self._cancelled, events)
        if self.row is not None and self.row.request.id in self._cancelled:
            events.append(self.row.finished(FINISH_CANCELLED))
            self.row = None
        self._cancelled.clear()

    def _prefill(self, request: Request, events: list[Event]) -> None:
        self.sequence = list(request.ids)
        logits = self.native.run(self.sequence, room=len(request.ids) + request.max_new_tokens + 1)
        self.stats.prompt_tokens += len(request.ids)
        row = self.picking.new_row(request, len(request.ids))
        self._advance(row, logits[-1], events)

    def _decode(self, events: list[Event]) -> None:
        row = self.row
        self.sequence.append(row.last)
        logits = self.native.run(self.sequence, room=len(row.request.ids) + row.request.max_new_tokens + 1)
        self._advance(row, logits[-1], events)

    def _advance(self, row, logits, events: list[Event]) -> None:
        import torch

        alive = self.picking.advance([row], torch.from_numpy(logits).unsqueeze(0), events)
        self.row = row if alive else None

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


def native_model(lm):
    """The llama.cpp model loaded with ``lm`` (--engine llama.cpp), or loaded now from its GGUF file
    and kept with it (a benchmark holding the same weights in both engines)."""
    if lm.native is None:
        from gptcli.engine.llamacpp_native import load

        lm.native = load(lm.source.gguf)
    return lm.native
