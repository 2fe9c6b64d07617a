"""OpenAI's Batch file format, as `vllm run-batch` and OpenAI's Batch API read and write it.

Input, one request a line: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions" or
"/v1/completions", "body": {...}}``. Output, one result a line: ``{"id", "custom_id",
"response": {"status_code", "request_id", "body"}, "error"}``. Everything is checked here,
before any model loads, with the file, line and field of the first problem.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from gptcli.errors import InputError

CHAT_URL, COMPLETIONS_URL = "/v1/chat/completions", "/v1/completions"
# Body fields read, and those accepted but without effect here (the model is --model's; a batch
# file has no stream to hold open; user is bookkeeping).
SAMPLING_FIELDS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop", "n",
                   "presence_penalty", "frequency_penalty", "response_format")
IGNORED_FIELDS = ("model", "stream", "user")
MAX_STOPS = 4  # OpenAI's limit


@dataclass(frozen=True)
class BatchRequest:
    """One line of a batch file, checked: its prompt and the settings its body gives."""

    custom_id: str
    url: str
    messages: tuple[dict, ...] | None
    prompt: str | None
    settings: dict  # of SAMPLING_FIELDS, only those present


def is_batch_record(fields: dict) -> bool:
    return "custom_id" in fields and "body" in fields


def parse(fields: dict, where: str) -> BatchRequest:
    """The request on one line.

    Raises:
        InputError: naming ``where`` and the field at fault.
    """
    custom_id = fields.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise InputError(f"{where}: field 'custom_id' must be a non-empty string")
    if fields.get("method", "POST") != "POST":
        raise InputError(f"{where}: field 'method' must be \"POST\", got {fields.get('method')!r}")
    url = fields.get("url")
    if url not in (CHAT_URL, COMPLETIONS_URL):
        raise InputError(f"{where}: field 'url' must be {CHAT_URL!r} or {COMPLETIONS_URL!r}, got {url!r}")
    body = fields.get("body")
    if not isinstance(body, dict):
        raise InputError(f"{where}: field 'body' must be a JSON object")
    unknown = [key for key in body if key not in SAMPLING_FIELDS + IGNORED_FIELDS + ("messages", "prompt")]
    if unknown:
        raise InputError(f"{where}: body.{unknown[0]} is not supported by gptcli generate; remove it (supported: "
                         f"messages or prompt, {', '.join(SAMPLING_FIELDS)})")
    settings = {key: _setting(key, body[key], where) for key in SAMPLING_FIELDS if key in body}
    if url == CHAT_URL:
        return BatchRequest(custom_id, url, _messages(body.get("messages"), where), None, settings)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{where}: body.prompt must be a non-empty string (one prompt a line)")
    return BatchRequest(custom_id, url, None, prompt, settings)


def _messages(messages, where: str) -> tuple[dict, ...]:
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{where}: body.messages must be a non-empty list of {{role, content}} objects")
    checked = []
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant", "developer"):
            raise InputError(f"{where}: body.messages[{number}].role must be system, user or assistant")
        content = message.get("content")
        if isinstance(content, list):  # text parts
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise InputError(f"{where}: body.messages[{number}].content holds a part that is not text; "
                                 f"only text parts are supported")
            content = "\n".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise InputError(f"{where}: body.messages[{number}].content must be a string or a list of text parts")
        role = "system" if message["role"] == "developer" else message["role"]
        checked.append({"role": role, "content": content})
    return tuple(checked)


def _setting(key: str, value, where: str):
    """A body setting, checked for its type and range (the sampler checks the rest)."""
    if key == "response_format":  # kept as a Constraint (or None for plain text)
        from gptcli.engine.constraints import ConstraintError, from_response_format

        try:
            return from_response_format(value)
        except ConstraintError as exc:
            raise InputError(f"{where}: body.response_format: {exc}") from None
    if key == "stop":
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOPS:
            raise InputError(f"{where}: body.stop must be a non-empty string or a list of up to {MAX_STOPS}")
        return tuple(stops)
    if key in ("max_tokens", "max_completion_tokens", "n", "seed"):
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
            raise InputError(f"{where}: body.{key} must be an integer of at least {0 if key == 'seed' else 1}")
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InputError(f"{where}: body.{key} must be a number")
    return float(value)


def result_line(custom_id: str, url: str, model: str, completions: list) -> dict:
    """The output line for one request: its choices (Completions, in sample order) as OpenAI's body."""
    digest = hashlib.sha256(custom_id.encode("utf-8")).hexdigest()[:24]
    prompt_tokens = completions[0].prompt_tokens
    generated = sum(c.generated_tokens for c in completions)
    if url == CHAT_URL:
        body = {"id": f"chatcmpl-{digest}", "object": "chat.completion", "model": model,
                "choices": [{"index": c.sample, "message": {"role": "assistant", "content": c.text},
                             "logprobs": None, "finish_reason": finish_reason(c.finish_reason)} for c in completions]}
    else:
        body = {"id": f"cmpl-{digest}", "object": "text_completion", "model": model,
                "choices": [{"index": c.sample, "text": c.text, "logprobs": None,
                             "finish_reason": finish_reason(c.finish_reason)} for c in completions]}
    body["created"] = int(time.time())
    body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                     "total_tokens": prompt_tokens + generated}
    return {"id": f"batch_req_{digest}", "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": digest, "body": body}, "error": None}


def finish_reason(reason: str) -> str:
    """OpenAI's finish_reason: the token budget is "length"; EOS and stop strings are "stop"."""
    return "length" if reason == "length" else "stop"
