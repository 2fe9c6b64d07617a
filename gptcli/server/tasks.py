"""gptcli's own task routes, which the commands use with --server.

``POST /gptcli/v1/generate`` takes one prompt as `gptcli generate` holds it (text or messages,
its images as data URLs, system, raw, truncate, sampling, stops, samples, the input's key) and fits and runs it with
the same services, so a command sent here writes what it would have written locally.
Errors a local run would raise as bad input or usage come back as 400 with their message
and ``type: input_error`` (code ``usage_error`` for usage), and the client raises them again.
"""

from __future__ import annotations

import json
from typing import Optional

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from gptcli.engine.api import Delta, Finished
from gptcli.errors import InputError, UsageError
from gptcli.server.errors import ApiError
from gptcli.server.naming import check_model

router = APIRouter()
CLIENT_CLOSED = 499
INPUT_ERROR = "input_error"


class GenerateTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Optional[str] = None
    prompt: Optional[str] = None
    messages: Optional[list[dict]] = None
    where: str = "the prompt"
    system: Optional[str] = None
    raw: bool = False
    truncate: Optional[str] = None
    max_new_tokens: int = 256
    sampling: dict = {}
    stop: list[str] = []
    num_samples: int = 1
    key: str = "0"
    stream: bool = False
    constraint: Optional[list[str]] = None  # [kind, spec] of engine.constraints.Constraint
    images: list[str] = []  # data URLs, filling the prompt's image parts in order (before a plain prompt's text)


@router.get("/gptcli/v1/info")
async def info(request: Request, task: str = "generate", model: Optional[str] = None) -> dict:
    """The name and identity (which changes when its files do) of the model ``task`` runs with when
    a command asks for ``model``: a command's --output run record names it, so a resumed run never
    mixes two models' results. 404 when ``model`` is not served here."""
    from gptcli.models.identity import model_identity
    from gptcli.server.batch_tasks import task_model

    served = request.app.state.served
    name, embedding = task_model(served, task, model)
    spec = served.embedder.spec if embedding else served.lm.source.spec
    takes_images = not embedding and served.lm.takes_images
    return {"model": name.id, "identity": model_identity(spec), "takes_images": takes_images}


@router.post("/gptcli/v1/generate")
async def generate_task(body: GenerateTask, request: Request):
    from gptcli.server.host import new_request_id

    served = request.app.state.served
    if body.model is not None:
        check_model(body.model, served.name)
    sampling = _sampling(body.sampling)
    constraint = await served.host.prepare(_constraint, served.lm, body.constraint)
    fitted = await served.host.prepare(_fit, served.lm, body)
    job_id = new_request_id()
    submission = served.host.submit(_requests(body, fitted, sampling, job_id, constraint))
    notes = [fitted.note] if fitted.note else []
    if body.stream:
        return _streamed(submission, notes)
    from gptcli.server.jobs import collect

    results = await collect(submission, request)  # keyed by the second part of the request id: the sample
    if results is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse({"completions": [_completion(results[s], s) for s in range(body.num_samples)],
                         "notes": notes})


def _sampling(fields: dict):
    from gptcli.engine.sampling import SamplingParams

    try:
        sampling = SamplingParams(**fields)
        sampling.validate()
    except TypeError as exc:
        raise refused(UsageError(f"unknown sampling setting ({exc})")) from None
    except UsageError as exc:
        raise refused(exc) from None
    return sampling


def _constraint(lm, given: list[str] | None):
    """The command's output constraint, checked here as a local run checks it (400 as usage errors)."""
    if given is None:
        return None
    from gptcli.engine.constraints import KINDS, Constraint, ConstraintError, checked, grammar_tokenizer

    try:
        if len(given) != 2 or given[0] not in KINDS:
            raise ConstraintError(f"constraint must be [kind, spec] with kind one of {', '.join(KINDS)}")
        constraint = checked(Constraint(*given))
        grammar_tokenizer(lm)
    except ConstraintError as exc:
        raise refused(UsageError(f"the output constraint: {exc}")) from None
    return constraint


def _fit(lm, body: GenerateTask):
    from gptcli.services.prompting import Prompt, fit_prompt

    try:
        prompt = Prompt(text=body.prompt, messages=tuple(body.messages) if body.messages else None, where=body.where,
                        images=_images(body))
        return fit_prompt(lm, prompt, body.system, body.raw, body.max_new_tokens, body.truncate)
    except (InputError, UsageError) as exc:
        raise refused(exc) from None


def _images(body: GenerateTask) -> tuple:
    """The task's images, checked as a local run checks them; only data URLs (the client read them)."""
    from gptcli.imageio import MAX_BYTES, is_data_url, read_image
    from gptcli.server.prompts import MAX_IMAGES

    if len(body.images) > MAX_IMAGES:
        raise InputError(f"{body.where} has {len(body.images)} images, more than the {MAX_IMAGES} the server takes "
                         f"in one prompt")
    images = []
    for number, url in enumerate(body.images, 1):
        if not is_data_url(url):
            raise UsageError(f"{body.where}: image {number} must be a data URL; the server opens no files")
        if len(url) > MAX_BYTES * 2:  # a bound before decoding
            raise InputError(f"{body.where}: image {number} is larger than the {MAX_BYTES // 2**20} MiB allowed")
        images.append(read_image(url, f"{body.where} image {number}"))
    return tuple(images)


def _requests(body: GenerateTask, fitted, sampling, job_id: str, constraint) -> list:
    from gptcli.engine.api import Request

    # The key is the input's and the sample's, as in a local run: seeded samples come out the same.
    return [Request((job_id, s), tuple(fitted.ids), fitted.max_new_tokens, sampling, tuple(body.stop),
                    key=f"{body.key}:{s}", stream=body.stream, constraint=constraint, inputs=fitted.inputs)
            for s in range(body.num_samples)]


def _completion(event: Finished, sample: int) -> dict:
    return {"sample": sample, "text": event.text, "prompt_tokens": event.prompt_tokens,
            "generated_tokens": event.generated_tokens, "finish_reason": event.finish_reason}


def _streamed(submission, notes: list[str]):
    from gptcli.server.streaming import SSE_HEADERS, cancelling_stream

    async def lines():
        finished = {}
        try:
            async for event in submission.events():
                if isinstance(event, Delta) and event.text:
                    yield _sse({"text": event.text})
                elif isinstance(event, Finished):
                    finished[event.request_id[1]] = event
        except ApiError as error:
            yield _sse(error.body())
            return
        yield _sse({"completions": [_completion(finished[s], s) for s in sorted(finished)], "notes": notes})
        yield "data: [DONE]\n\n"

    return cancelling_stream(lines(), submission, SSE_HEADERS)


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def refused(exc) -> ApiError:
    """A local run's bad-input or usage error, answered so the client can raise it again."""
    code = "usage_error" if isinstance(exc, UsageError) else "input_error"
    return ApiError(400, exc.message, code=code, type=INPUT_ERROR)
