"""The first engine: transformers causal LMs, continuously batched by ``Scheduler``."""

from __future__ import annotations

from typing import Hashable

from gptcli.engine.api import Engine, Event, Request
from gptcli.engine.scheduler import Scheduler


class TransformersEngine(Engine):
    """An Engine over a LoadedModel of kind causal-lm."""

    def __init__(self, lm, batch_size: int = 8, max_batch_tokens: int | None = None, stats=None):
        self.lm = lm
        self.scheduler = Scheduler(lm, batch_size, max_batch_tokens, stats)

    @property
    def stats(self):
        return self.scheduler.stats

    def submit(self, request: Request) -> None:
        self.scheduler.submit(request)

    def cancel(self, request_id: Hashable) -> None:
        self.scheduler.cancel(request_id)

    def step(self) -> list[Event]:
        return self.scheduler.step()

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def prefix_scorer(self, prefix: list[int]):
        from gptcli.engine.scoring import PrefixScorer

        return PrefixScorer(self.lm.model, self._pad_id(), prefix)

    def token_losses(self, windows: list[tuple[list[int], int]]) -> list[list[float]]:
        from gptcli.engine.scoring import token_losses

        return token_losses(self.lm.model, self._pad_id(), windows)

    def _pad_id(self) -> int:
        pad = self.lm.tokenizer.pad_token_id
        return pad if pad is not None else 0
