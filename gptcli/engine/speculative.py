"""Speculative decoding by prompt lookup for a row that runs alone (one stream: `generate PROMPT`,
a chat reply, a single summary, a server with one client).

Decoding one token at a time leaves a CPU or GPU waiting on memory: the weights are read once
per step whatever the number of tokens. So when the row's last tokens appeared before
(engine/lookup.py), the guessed continuation is fed with the row's next token in one forward
pass, and the row then picks its tokens from those logits one position at a time, as it would
have step by step, while they agree with the guess; the first disagreement (or the row's end)
stops it, and the cache forgets the columns past it. The tokens picked are the ones the
sequential steps pick from the same logits (greedy or seeded sampling, penalties, stop strings,
constraints and log-probabilities alike): only the matrix products see more than one row of
input, so the numbers can differ by rounding (float32 in practice never, bfloat16 sometimes
at a near tie, as with batching; README "Batch invariance").

Only where it pays: one running row of a model whose cache rows stay in place (not sliding
windows), and not after a guess was just wrong (``PAUSE`` steps). GPTCLI_SPECULATE=0 turns it off.
"""

from __future__ import annotations

import os

DISABLE = "GPTCLI_SPECULATE"
MOST_DRAFT = 8  # guessed tokens checked in one pass
PAUSE = 4  # plain steps after a guess that was wrong from its first token


def enabled() -> bool:
    return os.environ.get(DISABLE, "1") != "0"


def draft_for(row, cache_room: int) -> list[int]:
    """The guess for ``row`` (a Row running alone), or [] when there is none worth checking."""
    from gptcli.engine.lookup import PromptLookup

    if row.lookup is None:
        row.lookup = PromptLookup(list(row.request.ids))
    known = len(row.lookup.tokens) - len(row.request.ids)
    row.lookup.extend(row.text.ids[known:])  # what plain steps picked since
    if row.pause:
        row.pause -= 1
        return []
    left = row.request.max_new_tokens - len(row.text.ids)  # tokens it may still pick
    return row.lookup.draft(min(MOST_DRAFT, left - 1, cache_room - 1))


def note_checked(row, drafted: int, accepted: int) -> None:
    """After a guess wrong from its first token, the row takes plain steps for a while."""
    if drafted and not accepted:
        row.pause = PAUSE
