"""/health, /v1/models, /v1/chat/completions (text and image parts) and /v1/completions.

Each route checks the whole request (model, parameters, prompt length) before anything is
queued, so every refusal is a real HTTP status, streamed or not; then it queues the job and
either streams its events or waits for its results.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gptcli.server import jobs, prompts, schemas, shapes, streaming
from gptcli.server.naming import check_model, model_list

router = APIRouter()
CLIENT_CLOSED = 499  # nginx's "client closed request": never seen by the client, only in logs


@router.get("/health")
async def health(request: Request) -> dict:
    """Liveness and load, without the API key: requests in flight and how the past ones ended."""
    served = request.app.state.served
    return {"status": "ok", "model": served.name.id, "requests": served.host.health()}


@router.get("/v1/models")
async def models(request: Request) -> dict:
    served = request.app.state.served
    return model_list(served.started, served.name, *served.other_names())


@router.post("/v1/chat/completions")
async def chat_completions(body: schemas.ChatCompletionRequest, request: Request):
    served = request.app.state.served
    model = _checked(body, served)
    chat = prompts.chat_messages(body.messages)
    images = await prompts.read_images(served.lm, chat.images)
    encoded = await served.host.prepare(prompts.encode_chat, served.lm, chat.messages, images)
    budget = prompts.budget(served.lm, encoded.ids, body.limit(), "the messages", "messages")
    return await _run(jobs.plan(body, jobs.CHAT, model, [encoded.ids], [budget], [encoded.inputs]), served, request)


@router.post("/v1/completions")
async def completions(body: schemas.CompletionRequest, request: Request):
    served = request.app.state.served
    model = _checked(body, served)
    texts = body.prompts()
    where = ["the prompt"] if len(texts) == 1 else [f"prompt[{i}]" for i in range(len(texts))]
    ids = [await served.host.prepare(prompts.encode_text, served.lm, text, name) for text, name in zip(texts, where)]
    budgets = [prompts.budget(served.lm, one, body.limit(), name, "prompt") for one, name in zip(ids, where)]
    return await _run(jobs.plan(body, jobs.TEXT, model, ids, budgets), served, request)


def _checked(body, served) -> str:
    """The model id to answer with, after the checks that need no tokenizer."""
    name = check_model(body.model, served.name)
    schemas.refuse_unsupported(body)
    body.stop_strings()
    body.constraint()
    body.logprob_count()
    jobs.sampling_of(body)
    return name.id


async def _run(job: jobs.Job, served, request: Request):
    if job.requests[0].constraint is not None:
        await served.host.prepare(jobs.check_constrainable, served.lm)
    submission = served.host.submit(list(job.requests))  # 429 here, before any byte is sent
    tokenizer = served.lm.tokenizer
    if job.requests[0].stream:
        return streaming.streamed_response(job, submission, tokenizer)
    results = await jobs.collect(submission, request)
    if results is None:
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(shapes.response(job, results, tokenizer))
