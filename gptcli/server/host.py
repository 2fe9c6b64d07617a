"""The loaded model behind the server: its engine worker thread, and the bridge to the event loop.

The worker calls back from its own thread; a ``Submission`` hands each event to the loop
with ``call_soon_threadsafe``, so route code only ever awaits an asyncio queue. Counters of
finished and cancelled requests are kept here for /health, which is how a client (and the
tests) can see that a request whose client went away did free its row.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator

from gptcli.engine.api import FINISH_CANCELLED, Finished, Request
from gptcli.engine.worker import EngineFailure, EngineWorker, QueueFull
from gptcli.server.errors import SERVER_ERROR, ApiError

RETRY_AFTER_SECONDS = 1


@dataclass
class Counters:
    """Requests (one per choice) that ended since the server started, by how."""

    finished: int = 0
    cancelled: int = 0
    failed: int = 0


class EngineHost:
    """One loaded causal LM served to many clients through one engine worker."""

    def __init__(self, lm, batch_size: int, max_batch_tokens: int | None, max_waiting: int):
        from gptcli.engine.backends import engine_for

        self.lm = lm
        self.worker = EngineWorker(engine_for(lm, batch_size, max_batch_tokens), max_waiting)
        self.counters = Counters()
        # One thread renders and tokenizes prompts: off the event loop (a long prompt takes a
        # while), and one at a time (a fast tokenizer is not meant to be shared across threads).
        self._prompts = ThreadPoolExecutor(1, thread_name_prefix="gptcli-prompts")
        # summarize, translate and classify run their own decode loops and scoring passes on the model
        # (the services a local run uses): on a thread of their own, one request at a time, so a long
        # task neither blocks the event loop nor holds up the prompts of chat requests.
        self._tasks = ThreadPoolExecutor(1, thread_name_prefix="gptcli-tasks")

    def start(self) -> "EngineHost":
        self.worker.start()
        return self

    def stop(self, timeout: float) -> None:
        """Cancel what is left (uvicorn has already waited for in-flight requests) and join."""
        self.worker.stop(timeout, finish=False)
        self._prompts.shutdown(wait=False, cancel_futures=True)
        self._tasks.shutdown(wait=False, cancel_futures=True)

    async def prepare(self, function, *args):
        """Run prompt work (templates, tokenizing) on the prompt thread and await its result."""
        return await asyncio.get_running_loop().run_in_executor(self._prompts, function, *args)

    async def run_task(self, function, *args):
        """Run ``function(self.lm, *args)`` (a task's model work) on the task thread and await its result."""
        return await asyncio.get_running_loop().run_in_executor(self._tasks, function, self.lm, *args)

    def submit(self, requests: list[Request]) -> "Submission":
        return Submission(self, requests)

    def health(self) -> dict:
        counters = self.counters
        return {"in_flight": self.worker.in_flight(), "waiting": self.worker.waiting(),
                "finished": counters.finished, "cancelled": counters.cancelled, "failed": counters.failed}


class Submission:
    """The engine requests of one HTTP request (its choices), and their events as they come.

    Raises (on creation):
        ApiError: 429 when the queue is full, 503 when the server is shutting down; requests
            already queued for it are cancelled first.
    """

    def __init__(self, host: EngineHost, requests: list[Request]):
        self.host = host
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pending = {request.id for request in requests}
        queued = []
        try:
            for request in requests:
                host.worker.submit(request, self._from_worker)
                queued.append(request.id)
        except QueueFull:
            self._cancel(queued)
            raise ApiError(429, f"the server is busy: {host.worker.max_waiting} requests are already waiting; "
                                f"retry in a moment", code="queue_full", type="rate_limit_error",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        except RuntimeError:  # the worker refuses new requests while it stops
            self._cancel(queued)
            raise ApiError(503, "the server is shutting down", code="shutting_down", type=SERVER_ERROR) from None

    def _from_worker(self, event) -> None:
        """Called on the worker thread: hand the event to the loop (never raise into the worker)."""
        try:
            self.loop.call_soon_threadsafe(self._arrive, event)
        except RuntimeError:  # the loop has closed (shutdown): nobody waits for this event any more
            pass

    def _arrive(self, event) -> None:
        counters = self.host.counters
        if isinstance(event, Finished):
            if event.finish_reason == FINISH_CANCELLED:
                counters.cancelled += 1
            else:
                counters.finished += 1
        elif isinstance(event, EngineFailure):
            counters.failed += 1
        self.queue.put_nowait(event)

    async def events(self) -> AsyncIterator:
        """Every event of this submission until each request has finished (or failed).

        Raises:
            ApiError: 500 when the engine failed while running one of them.
        """
        while self.pending:
            event = await self.queue.get()
            if isinstance(event, EngineFailure):
                self.cancel()
                raise ApiError(500, f"the engine failed: {event.message}", type=SERVER_ERROR, code="engine_failure")
            if isinstance(event, Finished):
                self.pending.discard(event.request_id)
            yield event

    def cancel(self) -> None:
        """Cancel the requests that have not finished (the client went away); their rows free up."""
        self._cancel(list(self.pending))
        self.pending.clear()

    def _cancel(self, ids: list) -> None:
        for request_id in ids:
            self.host.worker.cancel(request_id)


def new_request_id() -> str:
    """A fresh id for one HTTP request: its choices' engine ids and, unseeded, their random keys."""
    return uuid.uuid4().hex
