"""Drive an engine from one thread, so many callers (a server's requests) can share it.

Callers submit requests with a callback; the worker thread moves them into the engine
between steps and calls each request's callback with its events, from the worker thread
(a server hands them over to its event loop). Steps run only while there is work; an idle
worker sleeps on a condition variable, not in a polling loop.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable

from gptcli.engine.api import Engine, Finished, Request


class QueueFull(Exception):
    """More requests are waiting than the worker was told to hold."""


@dataclass(frozen=True)
class EngineFailure:
    """The engine failed while this request was queued or running; it will not finish."""

    request_id: Hashable
    message: str


class EngineWorker:
    def __init__(self, engine: Engine, max_waiting: int | None = None, name: str = "gptcli-engine"):
        self.engine = engine
        self.max_waiting = max_waiting
        self._lock = threading.Condition()
        self._inbox: deque[tuple[Request, Callable]] = deque()
        self._cancels: list[Hashable] = []
        self._callbacks: dict[Hashable, Callable] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> "EngineWorker":
        self._thread.start()
        return self

    def submit(self, request: Request, on_event: Callable) -> None:
        """Queue a request; ``on_event`` gets its Delta and Finished events (or an EngineFailure).

        Raises:
            QueueFull: ``max_waiting`` requests are already waiting for a row.
            RuntimeError: the worker is stopping.
        """
        with self._lock:
            if self._stopping:
                raise RuntimeError("the engine is shutting down")
            if self.max_waiting is not None and self.waiting() >= self.max_waiting:
                raise QueueFull(f"{self.max_waiting} requests are already waiting")
            self._inbox.append((request, on_event))
            self._lock.notify()

    def cancel(self, request_id: Hashable) -> None:
        with self._lock:
            self._cancels.append(request_id)
            self._lock.notify()

    def waiting(self) -> int:
        """Requests submitted and not yet running."""
        pending = getattr(getattr(self.engine, "scheduler", self.engine), "pending", ())
        return len(self._inbox) + len(pending)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._callbacks) + len(self._inbox)

    def stop(self, timeout: float | None = None, finish: bool = True) -> None:
        """Refuse new requests; with ``finish`` let those in flight end, else cancel them; join."""
        with self._lock:
            self._stopping = True
            if not finish:
                self._cancels.extend(self._callbacks)
                self._cancels.extend(request.id for request, _ in self._inbox)
            self._lock.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not (self._inbox or self._cancels or self.engine.has_work() or self._stopping):
                    self._lock.wait()
                if self._stopping and not (self._inbox or self._cancels or self.engine.has_work()):
                    return
                self._take_inbox()
            try:
                events = self.engine.step()
            except Exception as exc:  # every caller must hear of it, or it would wait forever
                self._fail_all(exc)
                continue
            for event in events:
                self._deliver(event)

    def _take_inbox(self) -> None:
        while self._inbox:
            request, callback = self._inbox.popleft()
            self._callbacks[request.id] = callback
            self.engine.submit(request)
        for request_id in self._cancels:
            self.engine.cancel(request_id)
        self._cancels.clear()

    def _deliver(self, event) -> None:
        with self._lock:
            callback = (self._callbacks.pop if isinstance(event, Finished) else self._callbacks.get)(
                event.request_id, None)
        if callback is not None:
            callback(event)

    def _fail_all(self, exc: Exception) -> None:
        with self._lock:
            callbacks, self._callbacks = self._callbacks, {}
            for request_id in list(callbacks):
                self.engine.cancel(request_id)
        try:
            while self.engine.has_work():  # let the engine drop what it holds (cancelled above)
                self.engine.step()
        except Exception:
            pass
        message = f"{type(exc).__name__}: {exc}"
        for request_id, callback in callbacks.items():
            callback(EngineFailure(request_id, message))
