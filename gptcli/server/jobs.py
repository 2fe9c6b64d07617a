"""One OpenAI request planned as engine requests (a row per choice), and run to its results.

Seeds follow the engine's rule: a request's random stream derives from (seed, key). With a
``seed`` the key is the choice's index, so the same request with the same seed gives the same
text again; without one it is unique to this HTTP request, so two identical unseeded
requests sample independently.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from gptcli.engine.api import Finished, Request
from gptcli.errors import UsageError
from gptcli.server.errors import bad_request
from gptcli.server.host import Submission, new_request_id

# OpenAI's defaults when a request leaves them out (gptcli generate's own default is greedy).
DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_P = 1.0
CHAT, TEXT = "chat", "text"


@dataclass(frozen=True)
class Job:
    """The engine requests of one HTTP request, in choice order, and what its answer needs."""

    kind: str  # CHAT or TEXT (legacy completions)
    id: str
    model: str
    requests: tuple[Request, ...]
    prompt_tokens: int
    logprobs: int | None
    include_usage: bool
    created: int

    @staticmethod
    def choice_of(engine_id) -> int:
        return engine_id[1]


def check_constrainable(lm) -> None:
    """Raises ApiError 400 when the served model's tokenizer cannot be used for response_format."""
    from gptcli.engine.constraints import ConstraintError, grammar_tokenizer

    try:
        grammar_tokenizer(lm)
    except ConstraintError as exc:
        raise bad_request(f"'response_format': {exc}", "response_format") from None


def plan(body, kind: str, model: str, prompts: list[list[int]], budgets: list[int],
         inputs: list | None = None) -> Job:
    """Engine requests for ``prompts`` (each with its token budget and, for images, its pixel
    inputs: ``vision.PixelInputs``), ``n`` choices each.

    Raises:
        ApiError: 400 for sampling values the engine cannot use (named by their JSON parameter).
    """
    sampling = sampling_of(body)
    stops = body.stop_strings()
    choices = body.n or 1
    job_id = new_request_id()
    logprobs = body.logprob_count()
    constraint = body.constraint()
    requests = []
    inputs = inputs or [None] * len(prompts)
    for number, (ids, budget, extra) in enumerate(zip(prompts, budgets, inputs)):
        for sample in range(choices):
            index = number * choices + sample
            key = str(index) if sampling.seed is not None else f"{job_id}:{index}"
            requests.append(Request((job_id, index), tuple(ids), budget, sampling, stops, key, logprobs,
                                    stream=bool(body.stream), constraint=constraint, inputs=extra))
    return Job(kind, job_id, model, tuple(requests), sum(len(ids) for ids in prompts), logprobs,
               body.include_usage(), int(time.time()))


def sampling_of(body):
    """The request's SamplingParams, checked by the same rules as the command line's."""
    from gptcli.engine.sampling import MAX_SEED, SamplingParams

    if body.seed is not None and not 0 <= body.seed <= MAX_SEED:
        raise bad_request(f"'seed' must be between 0 and {MAX_SEED} (2**32-1), got {body.seed}", "seed")
    params = SamplingParams(temperature=DEFAULT_TEMPERATURE if body.temperature is None else body.temperature,
                            top_p=DEFAULT_TOP_P if body.top_p is None else body.top_p, seed=body.seed,
                            presence_penalty=body.presence_penalty or 0.0,
                            frequency_penalty=body.frequency_penalty or 0.0)
    try:
        params.validate()
    except UsageError as exc:
        raise _in_json_terms(exc.message) from None
    return params


_FLAG = re.compile(r"--([a-z][a-z-]*)")


def _in_json_terms(message: str):
    """The sampler's flag-named message with the JSON parameter's name instead (--top-p: 'top_p')."""
    flag = _FLAG.search(message)
    param = flag.group(1).replace("-", "_") if flag else None
    return bad_request(_FLAG.sub(lambda m: f"'{m.group(1).replace('-', '_')}'", message), param)


async def collect(submission: Submission, request) -> dict[int, Finished] | None:
    """Each choice's Finished event by choice index; None if the client went away first.

    Either way nothing of this request is left running: a client that hung up cancels its rows.
    """
    results: dict[int, Finished] = {}

    async def gather() -> dict[int, Finished]:
        async for event in submission.events():
            if isinstance(event, Finished):
                results[Job.choice_of(event.request_id)] = event
        return results

    work = asyncio.ensure_future(gather())
    gone = asyncio.ensure_future(client_gone(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        return work.result() if work.done() else None
    finally:
        work.cancel()
        gone.cancel()
        submission.cancel()  # no-op when all finished


async def client_gone(request) -> None:
    """Return when the HTTP client disconnects (the body is already read, so only that can come)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
