"""OpenAI's response and chunk objects for chat and (legacy) text completions."""

from __future__ import annotations

from gptcli.engine.api import FINISH_LENGTH
from gptcli.server import logprobs as lp
from gptcli.server.jobs import CHAT, Job


def finish_reason(engine_reason: str) -> str:
    """OpenAI's finish_reason: the token budget is "length"; EOS and stop strings are "stop"."""
    return "length" if engine_reason == FINISH_LENGTH else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _header(job: Job, chunk: bool) -> dict:
    if job.kind == CHAT:
        return {"id": f"chatcmpl-{job.id}", "object": "chat.completion.chunk" if chunk else "chat.completion",
                "created": job.created, "model": job.model, "system_fingerprint": None}
    return {"id": f"cmpl-{job.id}", "object": "text_completion", "created": job.created, "model": job.model,
            "system_fingerprint": None}


def response(job: Job, results: dict, tokenizer) -> dict:
    """The whole answer of a request that did not stream: every choice, in order, and usage."""
    choices = [_choice(job, index, results[index], tokenizer) for index in range(len(job.requests))]
    completion_tokens = sum(result.generated_tokens for result in results.values())
    return dict(_header(job, chunk=False), choices=choices, usage=usage(job.prompt_tokens, completion_tokens))


def _choice(job: Job, index: int, result, tokenizer) -> dict:
    entries = None
    if job.logprobs is not None and result.logprobs is not None:
        entries = lp.visible(tokenizer, result.logprobs, result.text, result.finish_reason)
    reason = finish_reason(result.finish_reason)
    if job.kind == CHAT:
        logprobs = None if entries is None else {"content": lp.chat_content(tokenizer, entries), "refusal": None}
        return {"index": index, "message": {"role": "assistant", "content": result.text, "refusal": None},
                "logprobs": logprobs, "finish_reason": reason}
    logprobs = None if entries is None else lp.completion_lists(tokenizer, entries, job.logprobs)
    return {"index": index, "text": result.text, "logprobs": logprobs, "finish_reason": reason}


def chunk(job: Job, index: int, text: str | None, reason: str | None = None, logprobs=None,
          role: bool = False) -> dict:
    """One streamed chunk for one choice: a piece of text, or (with ``reason``) its end."""
    if job.kind == CHAT:
        delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
    else:
        choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": reason}
    body = dict(_header(job, chunk=True), choices=[choice])
    if job.include_usage:
        body["usage"] = None  # OpenAI sends usage only in the last chunk, and null before it
    return body


def usage_chunk(job: Job, completion_tokens: int) -> dict:
    """The chunk that follows the last choice's end when stream_options.include_usage is set."""
    return dict(_header(job, chunk=True), choices=[], usage=usage(job.prompt_tokens, completion_tokens))
