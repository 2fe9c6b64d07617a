"""Requests, events and the engine interface.

A request carries everything that decides its result (token ids, sampling, stop strings,
limit, the key its random stream derives from), so the engine can batch requests from
different callers together. Events come per request as they happen, in no particular
order across requests: putting results back in input order is the caller's job.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Hashable, Iterable, Iterator

from gptcli.engine.constraints import Constraint
from gptcli.engine.sampling import SamplingParams

FINISH_STOP, FINISH_EOS, FINISH_LENGTH, FINISH_CANCELLED = "stop", "eos", "length", "cancelled"


@dataclass(frozen=True)
class Request:
    """One generation to run.

    ``key`` seeds the request's random stream together with its sampling seed: the same
    seed, key and ids give the same tokens whatever else runs beside them. ``logprobs``:
    None for none, 0 for the chosen tokens' log-probabilities, k for those and the k likeliest.
    ``constraint``: what the output must match (a JSON schema, a pattern, choices), or None.
    ``inputs``: for a prompt with images, an object whose ``tensors()`` gives the model's other
    inputs for ``ids`` (pixel values ...), made when the prefill runs.
    """

    id: Hashable
    ids: tuple[int, ...]
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    key: str = ""
    logprobs: int | None = None
    stream: bool = False  # emit Delta events as text becomes final
    constraint: Constraint | None = None
    inputs: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token, its log-probability under the model, and the likeliest alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class Delta:
    """Text of a running request that has become final (streaming), and its tokens' logprobs."""

    request_id: Hashable
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Finished:
    """A request's result. ``finish_reason``: stop (a stop string), eos, length or cancelled."""

    request_id: Hashable
    text: str
    prompt_tokens: int
    generated_tokens: int
    finish_reason: str
    logprobs: tuple[TokenLogprob, ...] | None = None


Event = Delta | Finished


@dataclass
class GenerationStats:
    """What an engine has done, for --stats: token counts, time to the first token, busy time."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    first_token_seconds: float | None = None
    decode_seconds: float = 0.0  # time spent in steps (prefill and decode)
    drafted_tokens: int = 0  # tokens guessed by prompt lookup and checked (engine/speculative.py)
    accepted_tokens: int = 0  # of those, the ones the model picked too
    _started: float = field(default_factory=time.perf_counter, repr=False)

    def mark_first_token(self) -> None:
        if self.first_token_seconds is None:
            self.first_token_seconds = time.perf_counter() - self._started


def drop_queued(pending, cancelled: set, events: list) -> None:
    """Take the queued requests whose ids are in ``cancelled`` out of ``pending`` (a deque), each
    ending with a Finished event, reason cancelled, in ``events``."""
    for request in [r for r in pending if r.id in cancelled]:
        pending.remove(request)
        events.append(Finished(request.id, "", len(request.ids), 0, FINISH_CANCELLED))


class Engine(ABC):
    """What the services ask of a loaded causal LM: generation requests in, events out, and
    log-probabilities of given tokens. Backends implement it; services never touch the model.
    (Encoder models have theirs: ``engine.encoders.EncoderEngine``.)"""

    @abstractmethod
    def submit(self, request: Request) -> None:
        """Queue a request; it joins the running batch when a row is free."""

    @abstractmethod
    def cancel(self, request_id: Hashable) -> None:
        """Stop a queued or running request; it ends with a Finished event, reason cancelled."""

    @abstractmethod
    def step(self) -> list[Event]:
        """Run one scheduling step (admit, decode one token for every running row); its events."""

    @abstractmethod
    def has_work(self) -> bool:
        """True while any request is queued or running."""

    @abstractmethod
    def prefix_scorer(self, prefix: list[int]):
        """An object whose ``answer_logprobs(rows)`` gives, for each (prompt ids, answer ids) row,
        the answer tokens' log-probabilities; prompts starting with ``prefix`` share its work."""

    @abstractmethod
    def token_losses(self, windows: list[tuple[list[int], int]]) -> list[list[float]]:
        """For each (ids, scored) window, the loss in nats of its last ``scored`` tokens."""

    def run(self, requests: Iterable[Request]) -> Iterator[Event]:
        """Submit requests and yield every event until all of them have finished."""
        for request in requests:
            self.submit(request)
        while self.has_work():
            yield from self.step()
