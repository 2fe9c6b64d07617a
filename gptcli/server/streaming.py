"""Server-sent events in OpenAI's chunk format, and the cancel that follows a client away.

A chat stream opens with a chunk per choice carrying the role, then content deltas as text
becomes final, a chunk per choice with its finish_reason, the usage chunk when asked
(``stream_options.include_usage``), and ``data: [DONE]``.
"""

from __future__ import annotations

import json
from typing import AsyncIterator

from gptcli.engine.api import Delta, Finished
from gptcli.server import logprobs as lp
from gptcli.server import shapes
from gptcli.server.errors import ApiError
from gptcli.server.host import Submission
from gptcli.server.jobs import CHAT, Job

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering of events


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, allow_nan=False)}\n\n"


def streamed_response(job: Job, submission: Submission, tokenizer):
    """The job's events as OpenAI's server-sent events."""
    return cancelling_stream(events(job, submission, tokenizer), submission, SSE_HEADERS)


def cancelling_stream(lines: AsyncIterator[str], submission: Submission, headers: dict):
    """A text/event-stream response of ``lines`` that cancels the submission's unfinished
    requests however it ends: done, failed, or the client gone."""
    from starlette.responses import StreamingResponse

    class CancellingStream(StreamingResponse):
        async def __call__(self, scope, receive, send) -> None:
            # Starlette stops the body iterator when the client disconnects, and may never start
            # it: cancel here, not in the iterator, so the rows free up in every case.
            try:
                await super().__call__(scope, receive, send)
            finally:
                submission.cancel()

    return CancellingStream(lines, media_type="text/event-stream", headers=headers)


async def events(job: Job, submission: Submission, tokenizer) -> AsyncIterator[str]:
    """The SSE lines of one streamed request."""
    if job.kind == CHAT:
        for index in range(len(job.requests)):
            yield sse(shapes.chunk(job, index, "", role=True))
    offsets = [0] * len(job.requests)  # characters sent per choice, for completions' text_offset
    completion_tokens = 0
    try:
        async for event in submission.events():
            index = Job.choice_of(event.request_id)
            if isinstance(event, Delta):
                yield sse(shapes.chunk(job, index, event.text, logprobs=_logprobs(job, event, tokenizer,
                                                                                  offsets[index])))
                offsets[index] += len(event.text)
            elif isinstance(event, Finished):
                completion_tokens += event.generated_tokens
                yield sse(shapes.chunk(job, index, None, shapes.finish_reason(event.finish_reason)))
    except ApiError as error:  # the engine failed mid-stream: say so in the stream, as OpenAI does
        yield sse(error.body())
        return
    if job.include_usage:
        yield sse(shapes.usage_chunk(job, completion_tokens))
    yield DONE


def _logprobs(job: Job, delta: Delta, tokenizer, offset: int):
    if job.logprobs is None:
        return None
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    entries = [entry for entry in delta.logprobs if entry.token_id not in special]  # EOS is not text
    if job.kind == CHAT:
        return {"content": lp.chat_content(tokenizer, entries), "refusal": None}
    return lp.completion_lists(tokenizer, entries, job.logprobs, offset)
