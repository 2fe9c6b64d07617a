"""All reading and writing of user data: stdin, stdout, input files and --output files.

Inputs are read and validated whole before any model loads. Output records are
written one JSON line at a time and flushed, so a crash loses nothing that was
finished; a rerun with the same --output skips what is already there.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from gptcli.errors import InputError, OutputClosed, UsageError

MAX_ERRORS_SHOWN = 1  # one line on stderr: the first problem, with where it is


@dataclass
class Record:
    """One input item: its id, its fields, and where it came from ("file:line")."""

    id: Any
    fields: dict
    where: str
    line: int = 0

    def text(self, name: str) -> str:
        """A required, non-empty string field."""
        value = self.fields.get(name)
        if value is None:
            raise InputError(f"{self.where}: missing field {name!r}")
        if not isinstance(value, str):
            raise InputError(f"{self.where}: field {name!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise InputError(f"{self.where}: field {name!r} is empty")
        return value


# ---------------------------------------------------------------- reading


def stdin_is_piped() -> bool:
    return not sys.stdin.isatty()


def read_stdin() -> str:
    """The whole of stdin as text (strict UTF-8, a leading BOM dropped)."""
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    return _decode(data, "stdin").lstrip("\ufeff")


def read_records(path: str, text_field: str) -> list[Record]:
    """Records from a .jsonl file or from lines of text (.txt, anything else, or - for stdin).

    Text lines become records with ``text_field`` set; blank lines are skipped.
    Raises InputError naming the file and line of the first problem.
    """
    name, data = _read_bytes(path)
    lines = _decode(data, name).lstrip("\ufeff").splitlines()
    if path.lower().endswith((".jsonl", ".ndjson")):
        records = list(_jsonl_records(name, lines))
    else:
        records = [Record(number, {text_field: line.rstrip("\r")}, f"{name}:{number}", number)
                   for number, line in enumerate(lines, start=1) if line.strip()]
    if not records:
        raise InputError(f"{name}: no records (the file is empty or holds only blank lines)")
    _check_unique_ids(records, name)
    return records


def _read_bytes(path: str) -> tuple[str, bytes]:
    if path == "-":
        return "stdin", sys.stdin.buffer.read()
    file = Path(path).expanduser()
    if not file.exists():
        raise InputError(f"{path}: no such file")
    if file.is_dir():
        raise InputError(f"{path}: is a folder, not a file")
    try:
        return path, file.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


def _decode(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{name}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                         f"convert the file to UTF-8 (e.g. iconv -t utf-8)") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise InputError(f"{name}:{line}: contains a NUL byte; is this a binary file?")
    return text


def _jsonl_records(name: str, lines: list[str]) -> Iterator[Record]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(value).__name__}")
        record_id = value.get("id", number)
        if not isinstance(record_id, (str, int)) or isinstance(record_id, bool):
            raise InputError(f"{where}: field 'id' must be a string or an integer")
        yield Record(record_id, value, where, number)


def _check_unique_ids(records: list[Record], name: str) -> None:
    seen: dict[Any, str] = {}
    for record in records:
        if record.id in seen:
            raise InputError(f"{record.where}: id {record.id!r} repeats {seen[record.id]}; ids must be unique")
        seen[record.id] = record.where


# ---------------------------------------------------------------- writing


def configure_stdout() -> None:
    """UTF-8 on stdout whatever the locale, so pipes always get valid UTF-8."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8", errors="replace")


def write_stdout(text: str) -> None:
    """Write and flush at once (results reach a pipe as they are made)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed() from None


def write_json_line(obj: dict) -> None:
    write_stdout(json.dumps(obj, ensure_ascii=False) + "\n")
