"""Chat replies from a model loaded here: one resident engine for the whole session.

The engine runs on a worker thread (``engine.worker``), as the server's does, so the model stays
loaded between turns and Ctrl-C lands in the caller's thread, never inside a model step: the
reply is cancelled in the engine and ends cleanly, and the next turn runs on the same engine.
"""

from __future__ import annotations

import itertools
import queue
from typing import Callable

from gptcli.errors import GptcliError
from gptcli.services.conversation import WHERE, ChatSettings, Conversation, Reply, fit_conversation, split_images
from gptcli.signals import Terminated

CANCEL_SECONDS = 60.0  # a cancel is seen between two steps: far less than this even on a big model


class LocalChat:
    """Replies to a conversation with ``lm`` (a LoadedModel of kind causal-lm, with a chat template)."""

    def __init__(self, lm, settings: ChatSettings):
        from gptcli.engine.backends import engine_for
        from gptcli.engine.worker import EngineWorker

        self.lm = lm
        self.settings = settings
        self.worker = EngineWorker(engine_for(lm, batch_size=1), name="gptcli-chat-engine").start()
        # Request ids never repeat: a cancel that arrives after its request ended must not stop the next one.
        self._ids = itertools.count()

    @property
    def model_name(self) -> str:
        return self.lm.name

    @property
    def takes_images(self) -> bool:
        """Whether the model is an image-text-to-text one (/image refuses images otherwise)."""
        return self.lm.takes_images

    def reply(self, conversation: Conversation, turn: int, on_text: Callable[[str], None],
              on_note: Callable[[str], None]) -> Reply:
        """The reply to the conversation's newest message, its text given to ``on_text`` as it comes.

        The oldest turns leave ``conversation`` when it outgrows the context (``on_note`` says so).
        Ctrl-C (KeyboardInterrupt) while it runs cancels it: the Reply then ends "cancelled".

        Raises:
            InputError: the newest message does not fit the context on its own.
            GptcliError: the engine failed.
        """
        fitted = fit_conversation(conversation, self._encode, self.lm.context_length, self.settings.max_new_tokens)
        for note in fitted.notes:
            on_note(note)
        events: queue.Queue = queue.Queue()
        request = self._request(turn, fitted)
        self.worker.submit(request, events.put)
        return self._wait(request.id, events, on_text)

    def close(self) -> None:
        self.worker.stop(timeout=CANCEL_SECONDS, finish=False)

    def _encode(self, messages: list[dict]):
        """Token ids and pixel inputs (services.vision.Encoded): a text model's through its chat
        template as before, a vision model's through its processor, the images filling their parts."""
        from gptcli.services.prompting import Prompt
        from gptcli.services.vision import encode

        plain, images = split_images(messages)
        return encode(self.lm, Prompt(messages=tuple(plain), where=WHERE, images=images), None, False)

    def _request(self, turn: int, fitted):
        from gptcli.engine.api import Request

        # The key is the turn's, as the server makes it from the body's key: seeded samples match.
        settings = self.settings
        return Request(next(self._ids), tuple(fitted.ids), fitted.max_new_tokens, settings.sampling, settings.stop,
                       key=f"{turn}:0", stream=True, inputs=fitted.inputs)

    def _wait(self, request_id: int, events: queue.Queue, on_text) -> Reply:
        shown: list[str] = []
        finished = None
        try:
            while finished is None:
                finished = self._take(events.get(), shown, on_text)
        except KeyboardInterrupt as exc:
            if finished is None:
                self.worker.cancel(request_id)
                self._drain(events)
                if isinstance(exc, Terminated):  # SIGTERM or SIGHUP: the session ends, after the cancel
                    raise
                return Reply("".join(shown), "cancelled")
        rest = finished.text[len("".join(shown)):] if finished.text.startswith("".join(shown)) else ""
        if rest:  # text held back until the end (a stop string's possible start) is shown now
            on_text(rest)
        return Reply(finished.text, finished.finish_reason, finished.prompt_tokens, finished.generated_tokens)

    @staticmethod
    def _take(event, shown: list[str], on_text):
        """The Finished event, or None after showing a Delta's text. Raises on an engine failure."""
        from gptcli.engine.api import Delta
        from gptcli.engine.worker import EngineFailure

        if isinstance(event, EngineFailure):
            raise GptcliError(f"the model failed while replying: {event.message}")
        if isinstance(event, Delta):
            if event.text:
                shown.append(event.text)
                on_text(event.text)
            return None
        return event

    @staticmethod
    def _drain(events: queue.Queue) -> None:
        """Wait for the cancelled request's end, so the next turn starts on a free engine."""
        from gptcli.engine.api import Finished
        from gptcli.engine.worker import EngineFailure

        while True:
            try:
                event = events.get(timeout=CANCEL_SECONDS)
            except queue.Empty:
                raise GptcliError(f"the model did not stop within {CANCEL_SECONDS:g} s of Ctrl-C") from None
            if isinstance(event, (Finished, EngineFailure)):
                return
