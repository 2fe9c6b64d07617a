"""Training data: read a file, detect its format from the keys, validate every row.

All of this runs before any model is loaded, so a typo on line 900 costs
a second, not a training run. Problems are collected (up to a limit) and
reported together, the first one self-sufficient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gptcli import strictjson
from gptcli.errors import InputError

TEXT, PROMPT_COMPLETION, MESSAGES, INSTRUCTION, LABELLED = (
    "text", "prompt-completion", "messages", "instruction", "text-label")
FORMAT_KEYS = {  # required keys of each format, most specific first
    MESSAGES: ("messages",),
    PROMPT_COMPLETION: ("prompt", "completion"),
    INSTRUCTION: ("instruction", "output"),
    LABELLED: ("text", "label"),
    TEXT: ("text",),
}
ROLES = ("system", "user", "assistant", "tool")
MAX_PROBLEMS = 20
SUFFIXES = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
DATA_OUT_OF_MEMORY_HINT = "all rows are read before training: split the file, or free memory"


@dataclass
class Row:
    """One validated training example: its format, fields and where it came from."""

    format: str
    fields: dict
    where: str


@dataclass
class Problems:
    """Problems found while validating, reported as one error at the end."""

    items: list[str] = field(default_factory=list)
    total: int = 0

    def add(self, where: str, problem: str) -> None:
        self.total += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(f"{where}: {problem}")

    def raise_if_any(self) -> None:
        if not self.total:
            return
        more = self.total - 1
        rest = "; ".join(self.items[1:6])
        tail = f" (and {more} more problem{'s' * (more > 1)}: {rest}{' ...' if more > 5 else ''})" if more else ""
        raise InputError(f"{self.items[0]}{tail}; fix the data and rerun")


def load_rows(path: str, task: str = "lm") -> list[Row]:
    """Read and validate a data file (or a hub dataset name); every row, every problem.

    Raises:
        InputError: the file is missing or unreadable, or rows are bad (file:line named).
    """
    problems = Problems()
    raw = _read_raw(path)
    rows = _validate(raw, task, problems)
    problems.raise_if_any()
    if not rows:
        raise InputError(f"{path}: no rows (the file is empty)")
    return rows


def _read_raw(path: str) -> list[tuple[str, object]]:
    file = Path(path).expanduser()
    name = path
    if not file.exists():
        if "/" in path and not path.startswith((".", "/", "~")) and file.suffix == "":
            return _hub_rows(path)
        raise InputError(f"{path}: no such file")
    if file.is_dir():
        raise InputError(f"{path}: is a folder; give a .jsonl, .json, .csv or .parquet file")
    suffix = file.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_rows(name, _text_of(name, file))
    if suffix == ".json":  # gptcli's strict JSON reader, not `datasets`: it would drop a lone surrogate without a word
        return list(strictjson.json_values(name, _text_of(name, file)))
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: unknown data format {file.suffix or '(no suffix)'}; "
                         f"use .jsonl, .json, .csv or .parquet")
    return _dataset_rows(name, file)


def _text_of(name: str, file: Path) -> str:
    try:
        return file.read_bytes().decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        raise InputError(f"{name}: not valid UTF-8; convert the file to UTF-8 (e.g. iconv -t utf-8)") from None


def _jsonl_rows(name: str, text: str) -> list[tuple[str, object]]:
    """Every line through strictjson's checks; a bad line is kept as a problem, so all of them are listed."""
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):  # \n only: strings may hold U+2028
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            rows.append((where, strictjson.parse_json_line(line, name, number)))
        except InputError as exc:
            rows.append((where, _BadJson(exc.message.removeprefix(f"{where}: "))))
    return rows


def _dataset_rows(name: str, file: Path) -> list[tuple[str, object]]:
    """csv/parquet through `datasets`; csv rows are numbered by line (+1 for the header)."""
    kind = SUFFIXES[file.suffix.lower()]
    where = (lambda i: f"{name}:{i + 2}") if kind == "csv" else (lambda i: f"{name}:record {i + 1}")
    try:
        return _table_rows({"path": kind, "data_files": str(file)}, where)
    except Exception as exc:  # datasets raises many types for a malformed file
        _raise_if_out_of_memory(exc, name)
        raise InputError(f"{name}: cannot read as {kind} ({_first_line(exc, 200)})") from None


def _hub_rows(name: str) -> list[tuple[str, object]]:
    try:
        return _table_rows({"path": name}, lambda i: f"{name}:record {i + 1}")
    except Exception as exc:
        _raise_if_out_of_memory(exc, name)
        raise InputError(f"--data {name}: not a local file, and the hub dataset could not be loaded "
                         f"({_first_line(exc, 160)})") from None


def _table_rows(source: dict, where) -> list[tuple[str, object]]:
    import datasets

    table = datasets.load_dataset(**source, split="train")
    return [(where(i), dict(row)) for i, row in enumerate(table)]


def _raise_if_out_of_memory(exc: BaseException, name: str) -> None:
    """Out of memory is a runtime failure (exit 1), not a bad file; `datasets` may wrap it in its own error."""
    from gptcli.models.placement import is_out_of_memory, out_of_memory_error

    cause, seen = exc, 0
    while cause is not None and seen < 10:
        if is_out_of_memory(cause):
            raise out_of_memory_error(f"reading {name}", cause, DATA_OUT_OF_MEMORY_HINT) from exc
        cause, seen = cause.__cause__ or cause.__context__, seen + 1


def _first_line(exc: BaseException, limit: int) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def _validate(raw: list[tuple[str, object]], task: str, problems: Problems) -> list[Row]:
    rows: list[Row] = []
    first: tuple[str, str] | None = None  # (format, where) of the first good row
    for where, value in raw:
        fmt = _check_row(where, value, task, problems)
        if fmt is None:
            continue
        if first is None:
            first = (fmt, where)
        elif fmt != first[0]:
            problems.add(where, f"mixed formats: this row is {fmt!r} but {first[1]} is {first[0]!r}; "
                                f"use one format per file")
            continue
        rows.append(Row(fmt, value, where))
    return rows


def row_of(where: str, fields: dict) -> Row:
    """One record read elsewhere (``gptcli eval perplexity --data``) checked as a training row.

    Raises:
        InputError: the record is no known format, or a field is bad (``where`` named).
    """
    problems = Problems()
    found = _check_row(where, fields, "lm", problems)
    problems.raise_if_any()
    return Row(found, fields, where)


class _BadJson(str):
    """A line that did not parse; kept in line order so problems are listed top to bottom."""


def _check_row(where: str, value: object, task: str, problems: Problems) -> str | None:
    if isinstance(value, _BadJson):
        problems.add(where, value)
        return None
    if not isinstance(value, dict):
        problems.add(where, f"expected a JSON object, got {type(value).__name__}")
        return None
    fmt = detect_format(value, task)
    if fmt is None:
        wanted = "'text' and 'label'" if task == "classify" else \
            "'text', 'prompt'+'completion', 'messages' or 'instruction'+'output'"
        problems.add(where, f"no known fields (found {', '.join(map(repr, value)) or 'none'}); need {wanted}")
        return None
    before = problems.total
    CHECKS[fmt](where, value, problems)
    return fmt if problems.total == before else None


def detect_format(fields: dict, task: str = "lm") -> str | None:
    """The format whose required keys a row has (classification only accepts text+label)."""
    if task == "classify":
        return LABELLED if "text" in fields or "label" in fields else None
    for fmt, keys in FORMAT_KEYS.items():
        if fmt != LABELLED and any(key in fields for key in keys[:1]):
            return fmt
    if "completion" in fields:
        return PROMPT_COMPLETION
    return None


def _need_text(where: str, fields: dict, name: str, problems: Problems, allow_empty: bool = False) -> None:
    value = fields.get(name)
    if value is None:
        problems.add(where, f"missing field {name!r}")
    elif not isinstance(value, str):
        problems.add(where, f"field {name!r} must be a string, got {type(value).__name__}")
    elif not allow_empty and not value.strip():
        problems.add(where, f"field {name!r} is empty")


def _check_text(where: str, fields: dict, problems: Problems) -> None:
    _need_text(where, fields, "text", problems)


def _check_prompt_completion(where: str, fields: dict, problems: Problems) -> None:
    _need_text(where, fields, "prompt", problems)
    _need_text(where, fields, "completion", problems)


def _check_instruction(where: str, fields: dict, problems: Problems) -> None:
    _need_text(where, fields, "instruction", problems)
    _need_text(where, fields, "output", problems)
    if fields.get("input") is not None:
        _need_text(where, fields, "input", problems, allow_empty=True)


def _check_labelled(where: str, fields: dict, problems: Problems) -> None:
    _need_text(where, fields, "text", problems)
    label = fields.get("label")
    if label is None:
        problems.add(where, "missing field 'label'")
    elif isinstance(label, bool) or not isinstance(label, (str, int)) or str(label).strip() == "":
        problems.add(where, "field 'label' must be a non-empty string or an integer")


def _check_messages(where: str, fields: dict, problems: Problems) -> None:
    messages = fields.get("messages")
    if not isinstance(messages, list) or not messages:
        problems.add(where, "field 'messages' must be a non-empty list of {role, content} objects")
        return
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            problems.add(where, f"messages[{number}] must be an object with 'role' and 'content'")
        elif message.get("role") not in ROLES:
            problems.add(where, f"messages[{number}] has unknown role {message.get('role')!r}; "
                                f"use one of {', '.join(ROLES)}")
        elif not isinstance(message.get("content"), str) or not message["content"].strip():
            problems.add(where, f"messages[{number}] needs a non-empty string 'content'")
    if all(isinstance(m, dict) and m.get("role") != "assistant" for m in messages):
        problems.add(where, "no assistant message: nothing to learn from this conversation")


CHECKS = {TEXT: _check_text, PROMPT_COMPLETION: _check_prompt_completion, MESSAGES: _check_messages,
          INSTRUCTION: _check_instruction, LABELLED: _check_labelled}


def eval_fraction_for(count: int, fraction: float | None) -> float:
    """The share held out for eval: ``fraction`` as given, else 10% when there are 20 rows or more."""
    if fraction is None:
        return 0.1 if count >= 20 else 0.0
    return fraction


def split_rows(rows: list[Row], fraction: float | None, seed: int) -> tuple[list[Row], list[Row]]:
    """Hold out an eval split: ``fraction`` of the rows (None: see ``eval_fraction_for``)."""
    import random

    fraction = eval_fraction_for(len(rows), fraction)
    count = int(round(len(rows) * fraction))
    if fraction > 0 and count == 0:
        count = 1
    if count >= len(rows):
        raise InputError(f"--eval-fraction {fraction} leaves no training rows out of {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def labels_of(rows: list[Row]) -> list[str]:
    """The class names of a text+label file, sorted (integers numerically)."""
    values = {r.fields["label"] for r in rows}
    if all(isinstance(v, int) for v in values):
        return [str(v) for v in sorted(values)]
    return sorted(str(v) for v in values)
