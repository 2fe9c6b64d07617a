"""Reading user data (stdin, arguments, --input files) and writing results to stdout.

Inputs are read and validated whole before any model loads; JSON is read strictly
(``strictjson``). --output files are the writing side's other half (``outputs``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from gptcli import strictjson
from gptcli.errors import GptcliError, InputError, OutputClosed

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
            raise InputError(f"{self.where}: missing field {name!r}{_fields_hint(self.fields)}")
        if not isinstance(value, str):
            raise InputError(f"{self.where}: field {name!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise InputError(f"{self.where}: field {name!r} is empty")
        return value


def _fields_hint(fields: dict) -> str:
    # A CSV without a header row, or a misspelt key, shows itself in the names the record does have.
    names = [str(key)[:30] for key in fields if key != "id"][:6]
    return f" (its fields: {', '.join(names)})" if names else ""


# ---------------------------------------------------------------- reading

# --input formats by suffix; any other suffix (and - for stdin) is read as lines of text.
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}
READ_FORMATS = ".txt (a line each), .jsonl, .json (an array of objects), .csv or .tsv (a header row), or - for stdin"
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".7z", ".tar", ".tgz")
# Files that are surely not text: refused by name, instead of read as lines of garbage (or NUL errors).
_NOT_TEXT = _COMPRESSED + (".parquet", ".arrow", ".feather", ".avro", ".orc", ".xlsx", ".xls", ".ods", ".docx",
                           ".doc", ".pdf", ".pkl", ".pickle", ".npy", ".npz", ".h5", ".hdf5", ".sqlite", ".db",
                           ".safetensors", ".pt", ".bin")
_CSV_FIELD_LIMIT = 2**31 - 1  # csv's default 128 KiB per cell is less than one long document


# Set for the processes of `--num-processes N`: the file that holds what the first process read from
# stdin, which each of them reads as its stdin (they cannot share the pipe).
STDIN_FILE = "GPTCLI_STDIN_FILE"
_stdin_read: list[bytes] = []  # what this process read from stdin, for handing on to those processes


def stdin_is_piped() -> bool:
    return bool(os.environ.get(STDIN_FILE)) or not sys.stdin.isatty()


def read_stdin() -> str:
    """The whole of stdin as text (strict UTF-8, a leading BOM dropped)."""
    return _decode(_stdin_bytes(), "stdin").lstrip("\ufeff")


def read_stdin_bytes() -> bytes:
    """The whole of stdin as bytes (an image piped in: --image -)."""
    return _stdin_bytes()


def _stdin_bytes() -> bytes:
    if os.environ.get(STDIN_FILE):
        return Path(os.environ[STDIN_FILE]).read_bytes()
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
    _stdin_read[:] = [data]
    return data


def stdin_bytes_read() -> bytes | None:
    """What this process read from stdin, as it came (None if it read none)."""
    return _stdin_read[-1] if _stdin_read else None


def stdin_lines() -> Iterator[str]:
    """stdin a line at a time, as each arrives (so a script can answer what it reads back): strict
    UTF-8, the line end (and a \\r before it) and a leading BOM dropped.

    Raises:
        InputError: a line that is not UTF-8 or holds a NUL byte, named as stdin:N.
    """
    for number, raw in enumerate(iter(sys.stdin.buffer.readline, b""), start=1):
        try:
            text = _decode(raw, "stdin")
        except InputError as exc:  # _decode counts lines in what it is given: here, one
            raise InputError(exc.message.replace("stdin:1:", f"stdin:{number}:", 1)) from None
        text = text[:-1] if text.endswith("\n") else text
        text = text[:-1] if text.endswith("\r") else text
        yield text.lstrip("\ufeff") if number == 1 else text


def check_argument(text: str, what: str) -> str:
    """``text`` from the command line, refused if it is not valid Unicode.

    Bytes that are not UTF-8 reach Python's argv as lone surrogates (PEP 383), which
    every tokenizer rejects later with an unhelpful TypeError.

    Raises:
        InputError: naming ``what`` (the argument or option) and the first bad byte.
    """
    position = strictjson.first_surrogate(text)
    if position is not None:
        code = ord(text[position])
        shown = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"
        raise InputError(f"{what} is not valid UTF-8 ({shown} at character {position + 1}); "
                         f"pass UTF-8 text (check the terminal's locale, or convert with iconv)")
    return text


def input_format(path: str) -> str:
    """How --input ``path`` is read: "jsonl", "json", "csv", "tsv", or "lines" (.txt, -, other suffixes).

    Raises:
        InputError: a suffix of a file that is not text (.parquet, .gz, .xlsx ...), with what is read.
    """
    if path == "-":
        return "lines"
    suffix = Path(path).suffix.lower()
    if suffix in _NOT_TEXT:
        fix = "decompress it first; " if suffix in _COMPRESSED else ""
        raise InputError(f"{path}: {suffix} files are not read; {fix}--input reads {READ_FORMATS}")
    return _FORMATS.get(suffix, "lines")


def reads_as_lines(path: str) -> bool:
    """Whether ``path`` is read a line a record, each record's id its line number."""
    return input_format(path) == "lines"


def read_records(path: str, text_field: str) -> list[Record]:
    """Records from --input: .jsonl, .json, .csv, .tsv, or lines of text (.txt, any other suffix, - for stdin).

    Text lines become records with ``text_field`` set; blank lines are skipped. JSON and CSV
    records keep their fields (CSV: the header row names them, every value a string). A
    record's id is its "id" field, else its line number (.jsonl, text) or its position (.json, CSV).
    Raises InputError naming the file and line of the first problem.
    """
    kind = input_format(path)
    name, data = _read_bytes(path)
    text = _decode(data, name).lstrip("\ufeff")
    records = list(_READERS[kind](name, text, text_field))
    if not records:
        raise InputError(f"{name}: no records (the file is empty or holds only blank lines)")
    _check_unique_ids(records, name)
    return records


def read_lines(path: str) -> list[str]:
    """Every line of a text --input (or - for stdin), blank ones too, split as ``split_lines`` does.

    For a command that keeps N lines in, N lines out: ``read_records`` skips blank lines, and
    those after the last text would be lost.
    """
    name, data = _read_bytes(path)
    return split_lines(_decode(data, name).lstrip("\ufeff"))


def _read_bytes(path: str) -> tuple[str, bytes]:
    if path == "-":
        return "stdin", _stdin_bytes()
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


def split_lines(text: str) -> list[str]:
    """Lines as a shell counts them (`wc -l`, `paste`): split on \n only, a \r before it dropped.

    str.splitlines also breaks on form feeds, U+2028 and the like, which would shift every
    later line and break translate's N lines in, N lines out.
    """
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def _text_records(name: str, text: str, text_field: str) -> Iterator[Record]:
    for number, line in enumerate(split_lines(text), start=1):
        if line.strip():
            yield Record(number, {text_field: line}, f"{name}:{number}", number)


def _jsonl_records(name: str, text: str, _text_field: str = "") -> Iterator[Record]:
    return (_record(*found) for found in strictjson.jsonl_values(name, text))


def _json_records(name: str, text: str, _text_field: str) -> Iterator[Record]:
    return (_record(*found) for found in strictjson.json_file_values(name, text))


def _csv_records(name: str, text: str, _text_field: str, delimiter: str = ",") -> Iterator[Record]:
    rows = _csv_rows(name, text, delimiter)
    if not rows:
        return
    header_line, header = rows[0]
    columns = _csv_columns(name, header_line, header)
    for number, (line, cells) in enumerate(rows[1:], start=1):
        where = f"{name}:{line}"
        if len(cells) != len(columns):
            separator = "comma" if delimiter == "," else "tab"
            raise InputError(f"{where}: {len(cells)} cell{'s' * (len(cells) != 1)}, but the header (line {header_line}) names "
                             f"{len(columns)} columns; put a cell that holds a {separator} in double quotes")
        yield _record(dict(zip(columns, cells)), where, line, number)


def _tsv_records(name: str, text: str, text_field: str) -> Iterator[Record]:
    return _csv_records(name, text, text_field, "\t")


def _csv_rows(name: str, text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """The non-blank rows with the line each starts on (a quoted cell may span lines)."""
    kind = "CSV" if delimiter == "," else "TSV"
    previous = csv.field_size_limit(_CSV_FIELD_LIMIT)
    # strict: a stray or unclosed quote is an error at its line, not cells silently run together.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, list[str]]] = []
    line = 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                rows.append((line, cells))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise InputError(f"{name}:{line}: not valid {kind} ({exc}); check the quotes in this row") from None
    finally:
        csv.field_size_limit(previous)
    return rows


def _csv_columns(name: str, line: int, header: list[str]) -> list[str]:
    columns = [cell.strip() for cell in header]
    if not all(columns):
        raise InputError(f"{name}:{line}: the header row has a blank column name; the first row must "
                         f"name every column")
    for index, column in enumerate(columns):
        if column in columns[:index]:
            raise InputError(f"{name}:{line}: the header names the column {column!r} twice")
    return columns


_READERS = {"lines": _text_records, "jsonl": _jsonl_records, "json": _json_records, "csv": _csv_records,
            "tsv": _tsv_records}


def _record(value: object, where: str, line: int, default_id: int) -> Record:
    """The same rules for every structured format: an object, with an optional string or integer id."""
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(value).__name__}")
    record_id = value.get("id", default_id)
    if not isinstance(record_id, (str, int)) or isinstance(record_id, bool):
        raise InputError(f"{where}: field 'id' must be a string or an integer")
    return Record(record_id, value, where, line)


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
    except OSError as exc:  # a full disk or a dead device under a redirect: say which, not "unexpected OSError"
        raise GptcliError(f"cannot write the results to stdout ({_stdout_target()}): {exc.strerror}; free "
                          f"some space there or send the output elsewhere") from exc


def _stdout_target() -> str:
    try:
        return os.readlink("/proc/self/fd/1")  # Linux: the file or device behind a redirect
    except OSError:
        return "a redirect"


def write_json_line(obj: dict) -> None:
    write_stdout(json.dumps(obj, ensure_ascii=False) + "\n")
