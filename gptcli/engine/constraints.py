"""Constrained decoding: output that matches a JSON schema, any JSON object, a regular
expression or one of fixed choices, enforced token by token.

A Constraint is plain data (it travels in a Request and through the server); the grammar
engine is llguidance, chosen over xgrammar after measuring both here
(benchmarks/results/grammar_engines.txt): the same per-token cost, no dependencies, and it
names the schema keywords it does not implement where xgrammar ignores them (a silently
ignored "not" or "uniqueItems" would be output that fails validation).

Each running row gets its own matcher: the scheduler masks the row's logits to the tokens
the grammar allows next (EOS only once the output is complete) and feeds it the picked token.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

JSON_SCHEMA, JSON_OBJECT, REGEX, CHOICE = "json_schema", "json_object", "regex", "choice"
KINDS = (JSON_SCHEMA, JSON_OBJECT, REGEX, CHOICE)
# Compact JSON: no whitespace between tokens. With flexible whitespace a weak model can emit
# spaces and newlines until its token limit and never finish the object.
JSON_OPTIONS = {"whitespace_flexible": False}
_REGEX_SPECIALS = set("\\.+*?()|[]{}^$-&~#/ ")


class ConstraintError(ValueError):
    """The schema, pattern or choices cannot be enforced; the message says what and why."""


@dataclass(frozen=True)
class Constraint:
    """What the output must match. ``spec``: the schema as JSON (its key order kept: it is the output's), the pattern, or the
    choices as a JSON list (hashable, so requests with the same constraint compare equal)."""

    kind: str
    spec: str

    def grammar(self) -> str:
        """The llguidance grammar (a JSON string) for this constraint."""
        from llguidance import LLMatcher

        if self.kind in (JSON_SCHEMA, JSON_OBJECT):
            return LLMatcher.grammar_from_json_schema(self.spec, defaults=JSON_OPTIONS)
        if self.kind == REGEX:
            return LLMatcher.grammar_from_regex(self.spec)
        if self.kind == CHOICE:
            return LLMatcher.grammar_from_regex("|".join(_literal(c) for c in json.loads(self.spec)))
        raise ConstraintError(f"unknown constraint kind {self.kind!r}")

    @property
    def is_json(self) -> bool:
        return self.kind in (JSON_SCHEMA, JSON_OBJECT)


def json_schema(schema) -> Constraint:
    """A constraint from a JSON schema (a dict, or JSON text); checked at once.

    Raises:
        ConstraintError: not JSON, not an object, or a keyword the grammar engine does not implement.
    """
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise ConstraintError(f"the schema is not valid JSON ({exc.msg} at line {exc.lineno} column "
                                  f"{exc.colno})") from None
    if not isinstance(schema, dict):
        raise ConstraintError(f"a JSON schema must be a JSON object, got {type(schema).__name__}")
    return checked(Constraint(JSON_SCHEMA, json.dumps(schema, ensure_ascii=False)))


def json_object() -> Constraint:
    """Any JSON object."""
    return Constraint(JSON_OBJECT, json.dumps({"type": "object"}))


def regex(pattern: str) -> Constraint:
    """Output that matches ``pattern`` as a whole (Rust regex syntax, as in Python's re for common
    patterns; no look-around or back-references)."""
    if not pattern:
        raise ConstraintError("the pattern is empty")
    return checked(Constraint(REGEX, pattern))


def choice(options: list[str]) -> Constraint:
    """Output that is exactly one of ``options``."""
    options = list(dict.fromkeys(options))  # a repeated choice is the same choice
    if not options or any(not option for option in options):
        raise ConstraintError("each choice must be a non-empty text")
    return checked(Constraint(CHOICE, json.dumps(options, ensure_ascii=False)))


def from_response_format(value) -> Constraint | None:
    """OpenAI's ``response_format`` as a constraint: None for ``{"type": "text"}``.

    ``json_schema`` is enforced whether ``strict`` is true or not: output that fails its schema
    is never what a caller who gave one wants.

    Raises:
        ConstraintError: not one of OpenAI's forms, or a schema that cannot be enforced; the
            message names the field (``type``, ``json_schema.schema``).
    """
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise ConstraintError('must be {"type": "text"}, {"type": "json_object"} or '
                              '{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}')
    if value["type"] == "text":
        return None
    if value["type"] == "json_object":
        return json_object()
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise ConstraintError("json_schema.schema must be a JSON schema object")
    try:
        return json_schema(spec["schema"])
    except ConstraintError as exc:
        raise ConstraintError(f"json_schema.schema: {exc}") from None


def checked(constraint: Constraint) -> Constraint:
    """The constraint, once the grammar engine has accepted it (before any model loads)."""
    from llguidance import LLMatcher

    is_error, messages = LLMatcher.validate_grammar_with_warnings(constraint.grammar(), None)
    if is_error:
        raise ConstraintError(_plain(messages[0] if messages else "the grammar engine refused it"))
    return constraint


def _plain(message: str) -> str:
    """llguidance's message on one line, in our words where we know them."""
    message = " ".join(message.split())
    if message.startswith("Unimplemented keys:"):
        keys = message.split(":", 1)[1].strip()
        return (f"the schema uses {keys}, which constrained decoding does not support; remove "
                f"{'it' if ',' not in keys else 'them'} or express the rule another way")
    return message


def _literal(text: str) -> str:
    """A regex that matches ``text`` exactly."""
    out = []
    for char in text:
        if char in _REGEX_SPECIALS:
            out.append("\\" + char)
        elif not char.isprintable():
            out.append(f"\\x{{{ord(char):x}}}")
        else:
            out.append(char)
    return "".join(out)


# -- at run time -------------------------------------------------------------------------------
_EXECUTOR = None
_LOCK = threading.Lock()


def grammar_tokenizer(lm):
    """The model's tokenizer in the grammar engine's form, built once per loaded model (~0.5 s).

    Raises:
        ConstraintError: the tokenizer cannot be used (not a fast tokenizer, or one the grammar
            engine cannot read).
    """
    with _LOCK:
        cached = getattr(lm, "_gptcli_grammar_tokenizer", None)
        if cached is None:
            cached = _build_tokenizer(lm)
            lm._gptcli_grammar_tokenizer = cached
        return cached


def _build_tokenizer(lm):
    import llguidance.hf
    from gptcli.engine.scheduler import eos_ids

    eos = sorted(eos_ids(lm))
    try:
        return llguidance.hf.from_tokenizer(lm.tokenizer, n_vocab=vocabulary_size(lm.model),
                                            eos_token=eos or None)
    except Exception as exc:  # a slow tokenizer, or a tokenizer.json llguidance cannot parse
        raise ConstraintError(f"this model's tokenizer cannot be used for constrained decoding "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None


def vocabulary_size(model) -> int:
    """The number of logits per position (may exceed the tokenizer's size: padded embeddings)."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and getattr(output, "weight", None) is not None:
        return int(output.weight.shape[0])
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.vocab_size)


class RowGrammar:
    """One row's matcher: which tokens may come next, and the tokens taken so far."""

    def __init__(self, tokenizer, constraint: Constraint):
        from llguidance import LLMatcher

        self.matcher = LLMatcher(tokenizer, constraint.grammar())
        if self.matcher.is_error():
            raise ConstraintError(_plain(self.matcher.get_error()))

    def take(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            # Only a masked-in token is ever picked: this is a bug, not bad input.
            raise RuntimeError(f"constrained decoding: token {token} was not allowed "
                               f"({self.matcher.get_error()})")

    @property
    def complete(self) -> bool:
        """Nothing more may follow: the output is whole (only EOS is allowed next)."""
        return self.matcher.is_stopped()


def allowed_tokens(grammars: list[RowGrammar], vocabulary: int, device):
    """A (rows, vocabulary) bool tensor: True where the row's grammar allows the token next."""
    import numpy as np
    import torch
    from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask_par

    bitmask = allocate_token_bitmask(len(grammars), vocabulary)
    fill_next_token_bitmask_par(_executor(), [(g.matcher, i) for i, g in enumerate(grammars)], bitmask)
    bits = torch.from_numpy(bitmask.view(np.uint32).astype(np.int64))
    shifts = torch.arange(32, dtype=torch.int64)
    allowed = ((bits.unsqueeze(-1) >> shifts) & 1).bool().reshape(len(grammars), -1)[:, :vocabulary]
    return allowed.to(device)


def _executor():
    global _EXECUTOR
    with _LOCK:
        if _EXECUTOR is None:
            from llguidance import LLExecutor

            _EXECUTOR = LLExecutor()
        return _EXECUTOR
