"""The engine's token log-probabilities in OpenAI's two shapes (chat's ``content`` list, and the
legacy completions' parallel lists).

Values are the model's log-softmax before temperature and top-p, as OpenAI reports them. The
tokens listed are those of the text returned: the end-of-sequence token, and tokens past a stop
string, are left out.
"""

from __future__ import annotations

import math

from gptcli.engine.api import FINISH_EOS, FINISH_STOP

FLOOR = -9999.0  # JSON has no -inf; a probability that underflowed is reported as this


def visible(tokenizer, logprobs, text: str, finish_reason: str) -> list:
    """The TokenLogprobs of the tokens that make up ``text``."""
    special = set(getattr(tokenizer, "all_special_ids", ()) or ())
    kept = [entry for entry in logprobs if entry.token_id not in special] if finish_reason == FINISH_EOS \
        else list(logprobs)
    if finish_reason != FINISH_STOP:
        return kept
    shown, offset = [], 0
    for entry in kept:  # keep tokens that begin before the cut made at the stop string
        if offset >= len(text):
            break
        shown.append(entry)
        offset += len(token_text(tokenizer, entry.token_id))
    return shown


def token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def number(value: float) -> float:
    return value if math.isfinite(value) else FLOOR


def chat_content(tokenizer, entries) -> list[dict]:
    """Chat's ``logprobs.content``: per token its text, log-probability, UTF-8 bytes and the top ones."""
    return [dict(_chat_token(tokenizer, entry.token_id, entry.logprob),
                 top_logprobs=[_chat_token(tokenizer, token, value) for token, value in entry.top])
            for entry in entries]


def _chat_token(tokenizer, token_id: int, value: float) -> dict:
    text = token_text(tokenizer, token_id)
    return {"token": text, "logprob": number(value), "bytes": list(text.encode("utf-8"))}


def completion_lists(tokenizer, entries, top: int, start_offset: int = 0) -> dict:
    """Completions' ``logprobs``: tokens, token_logprobs, top_logprobs and text_offset, in parallel."""
    tokens, offsets, offset = [], [], start_offset
    for entry in entries:
        text = token_text(tokenizer, entry.token_id)
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
    tops = None
    if top > 0:
        tops = [{token_text(tokenizer, token): number(value) for token, value in entry.top} for entry in entries]
    return {"tokens": tokens, "token_logprobs": [number(entry.logprob) for entry in entries],
            "top_logprobs": tops, "text_offset": offsets}
