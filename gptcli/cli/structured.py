"""--json-schema, --json-object, --regex and --choice: the output constraint a command asks for.

The flag for "any JSON object" is --json-object, not --json: --json already means "write each
result as a JSON record" on every command, and one flag with two meanings would break scripts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from gptcli.errors import InputError, UsageError

PANEL = "Structured output"

JsonSchema = Annotated[Optional[str], typer.Option(
    "--json-schema", rich_help_panel=PANEL, show_default=False,
    help="Output that validates against this JSON schema: a file, or the schema itself ('{...}').")]
JsonObject = Annotated[bool, typer.Option(
    "--json-object", rich_help_panel=PANEL, help="Output that is one JSON object (any keys).")]
Regex = Annotated[Optional[str], typer.Option(
    "--regex", rich_help_panel=PANEL, show_default=False,
    help="Output that matches this regular expression as a whole (Rust regex syntax: no look-around).")]
Choice = Annotated[Optional[List[str]], typer.Option(
    "--choice", rich_help_panel=PANEL, show_default=False,
    help="Output that is exactly one of these: a,b,c (repeatable; \\, for a comma inside a choice).")]


def constraint_from_options(json_schema: str | None, json_object: bool, regex: str | None,
                            choice: list[str] | None):
    """The Constraint the options ask for, checked by the grammar engine; None when none is given.

    Raises:
        UsageError: more than one is given, or one cannot be enforced (named by its flag).
        InputError: the schema file cannot be read or is not JSON.
    """
    from gptcli.engine import constraints

    given = [flag for flag, value in (("--json-schema", json_schema), ("--json-object", json_object),
                                      ("--regex", regex), ("--choice", choice)) if value]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} cannot be combined; give one output constraint")
    if not given:
        return None
    try:
        if json_schema is not None:
            text, source = _schema_text(json_schema)
            try:
                return constraints.json_schema(text)
            except constraints.ConstraintError as exc:
                raise (InputError if source else UsageError)(f"--json-schema {source or ''}".rstrip()
                                                             + f": {exc}") from None
        if json_object:
            return constraints.json_object()
        if regex is not None:
            return constraints.regex(regex)
        return constraints.choice(split_choices(choice))
    except constraints.ConstraintError as exc:
        raise UsageError(f"{given[0]}: {exc}") from None


def _schema_text(value: str) -> tuple[str, str | None]:
    """The schema's text and the file it came from (None when given inline)."""
    if value.lstrip().startswith("{"):
        return value, None
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"--json-schema: {value} is neither a file nor a JSON schema ('{{...}}')")
    try:
        return path.read_text(encoding="utf-8"), value
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--json-schema {value}: cannot read it ({exc})") from None


def split_choices(values: list[str]) -> list[str]:
    """``a,b`` and repeated --choice give the choices; ``\\,`` is a comma inside one."""
    choices = []
    for value in values:
        choices += [part.replace("\\,", ",") for part in re.split(r"(?<!\\),", value)]
    return choices


def refuse_stops(constraint, stops) -> None:
    """A stop string would cut structured output short of what its grammar requires."""
    if constraint is not None and stops:
        raise UsageError("--stop cannot be combined with an output constraint: a stop string could cut the "
                         "output before it is complete; the constraint already ends it")


def run_setting(constraint) -> dict:
    """The constraint as the --output run record keeps it (absent without one: older records stay valid)."""
    return {"constraint": [constraint.kind, constraint.spec]} if constraint is not None else {}


def check_model(lm, constraints) -> None:
    """Build the grammar engine's view of the model's tokenizer if any request is constrained.

    Raises:
        UsageError: the tokenizer cannot be used for constrained decoding (exit 2: a model
            choice, not a failure; never a silent fallback to unconstrained text).
    """
    if not any(c is not None for c in constraints):
        return
    from gptcli.engine.constraints import ConstraintError, grammar_tokenizer

    try:
        grammar_tokenizer(lm)
    except ConstraintError as exc:
        raise UsageError(f"{lm.name}: {exc}; choose a model with a fast (tokenizer.json) tokenizer") from None


def incomplete_note(count: int, total: int) -> None:
    """Warn that constrained results cut by their token limit are incomplete (they will not parse)."""
    if count:
        from gptcli import console

        console.warn(f"{count} of {total} results reached their token limit before the output constraint was "
                     f"complete (finish_reason \"length\"): they do not parse; raise --max-new-tokens (max_tokens) "
                     f"or bound the schema (maxLength, maxItems, maximum)")
