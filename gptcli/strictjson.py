"""JSON as gptcli reads it from users: one value a line (.jsonl) or one array (.json), every value checked.

Values that parse but cannot be right are refused at read time, naming file and line, instead
of failing after the model loaded (a lone surrogate in the tokenizer, NaN or a deep nest when
the result is written - and then again on every rerun). ``textio`` turns the values into records;
finetune's data reader uses the same functions.
"""

from __future__ import annotations

import json
import math
import re
from typing import Iterator

from gptcli.errors import InputError

MAX_DEPTH = 100  # JSON nesting; chat messages need 3, and deeper fails later (json.dumps of the result recurses)
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


def jsonl_values(name: str, text: str) -> Iterator[tuple[object, str, int, int]]:
    # Split on \n only: a JSON string may hold U+2028, U+0085 ..., which str.splitlines breaks on.
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield parse_json_line(line, name, number), f"{name}:{number}", number, number


def parse_json_line(line: str, name: str, number: int) -> object:
    """Line ``number`` of the JSON-lines file ``name``: one JSON value, checked (finetune reads its data so too).

    Raises:
        InputError: naming "name:number": not JSON, more than one value, or a value that cannot be
            right (a lone surrogate, NaN, a repeated key, nesting past MAX_DEPTH).
    """
    where = f"{name}:{number}"
    value, end = _decode_json(line, _skip_space(line, 0), name, number, where)
    if _skip_space(line, end) < len(line):
        raise InputError(f"{where}: not valid JSON (extra data at column {end + 1}); "
                         f"a .jsonl file holds one object per line")
    return value


def json_values(name: str, text: str) -> Iterator[tuple[str, object]]:
    """("name:line", value) for each record of a .json file's ``text``, checked as ``parse_json_line`` does.

    Raises:
        InputError: naming the file and line of the first problem.
    """
    return ((where, value) for value, where, _line, _number in json_file_values(name, text))


def json_file_values(name: str, text: str) -> Iterator[tuple[object, str, int, int]]:
    """A .json file: an array of objects (or, as finetune also reads them, one object per line)."""
    start = _skip_space(text, 0)
    if text.startswith("[", start):
        return _json_array_values(name, text, start + 1)
    if _is_one_document(text, start):  # a single object, maybe over many lines: one record
        line = _line_of(text, start)
        where = f"{name}:{line}"
        return iter([(_decode_json(text, start, name, 1, where)[0], where, line, 1)])
    return jsonl_values(name, text)


def _is_one_document(text: str, start: int) -> bool:
    try:
        _value, end = _DECODER.raw_decode(text, start)
    except (ValueError, _Refused, RecursionError):
        return False  # the line-by-line reader says where the problem is
    return _skip_space(text, end) == len(text)


def _json_array_values(name: str, text: str, pos: int) -> Iterator[tuple[object, str, int, int]]:
    line, counted, number = 1, 0, 0
    while True:
        pos = _skip_space(text, pos)
        if number == 0 and text.startswith("]", pos):
            break  # an empty array: "no records" follows
        line, counted = line + text.count("\n", counted, pos), pos
        number += 1
        where = f"{name}:{line}"
        value, pos = _decode_json(text, pos, name, 1, where)
        yield value, where, line, number
        pos = _skip_space(text, pos)
        if text.startswith(",", pos):
            pos += 1
        elif text.startswith("]", pos):
            break
        else:
            raise InputError(f"{name}:{_line_of(text, pos)}: expected , or ] after record {number}"
                             + ("; the array is not closed" if pos >= len(text) else ""))
    rest = _skip_space(text, pos + 1)
    if rest < len(text):
        raise InputError(f"{name}:{_line_of(text, rest)}: text after the array's closing ]; "
                         f"a .json file holds one array of objects")


class _Refused(Exception):
    """Raised by the decoder's hooks; turned into an InputError with the record's place."""


def _one_of_each_key(pairs: list) -> dict:
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set = set()
        for key, _item in pairs:
            if key in seen:
                raise _Refused(f"the key {key!r} appears twice in one object; keep one")
            seen.add(key)
    return value


def _no_constant(name: str) -> float:
    raise _Refused(f"{name} is not a number JSON allows; write a number, null or a string")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:20]} is out of range; write it as a string")
    return value


def _bounded_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # beyond sys.get_int_max_str_digits()
        raise _Refused(f"an integer of {len(text)} digits is too long; write it as a string") from None


_DECODER = json.JSONDecoder(object_pairs_hook=_one_of_each_key, parse_constant=_no_constant,
                            parse_float=_finite_float, parse_int=_bounded_int)


def _decode_json(text: str, pos: int, name: str, first_line: int, where: str) -> tuple[object, int]:
    """One JSON value at ``pos``, checked; ``first_line`` is the line ``text`` starts on."""
    try:
        value, end = _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}:{first_line + exc.lineno - 1}: not valid JSON ({exc.msg} at column "
                         f"{exc.colno})") from None
    except _Refused as exc:
        raise InputError(f"{where}: {exc}") from None
    except RecursionError:
        raise InputError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep; flatten the record") from None
    _check_value(value, where)
    return value, end


def _check_value(value: object, where: str) -> None:
    """Every string (keys too) valid Unicode, and no deeper than MAX_DEPTH; a loop, not recursion."""
    stack: list[tuple[object, int, tuple]] = [(value, 0, ())]
    while stack:
        item, depth, trail = stack.pop()
        if isinstance(item, str):
            _check_string(item, where, f"field {_path(trail)!r}" if trail else "the record")
            continue
        if not isinstance(item, (dict, list)):
            continue
        if depth >= MAX_DEPTH:
            raise InputError(f"{where}: JSON nested more than {MAX_DEPTH} levels deep; flatten the record")
        for key, child in (item.items() if isinstance(item, dict) else enumerate(item)):
            if isinstance(key, str):
                _check_string(key, where, f"a key in {_path(trail) or 'the record'}")
            stack.append((child, depth + 1, (trail, key)))


def _path(trail: tuple) -> str:
    """messages[1].content from the (parent, key) chain."""
    parts: list[str] = []
    while trail:
        trail, key = trail
        parts.append(f"[{key + 1}]" if isinstance(key, int) else (f".{key}" if trail else str(key)))
    return "".join(reversed(parts)) if parts else "the record"


def _check_string(text: str, where: str, what: str) -> None:
    position = first_surrogate(text)
    if position is not None:
        raise InputError(f"{where}: {what} holds \\u{ord(text[position]):04x}, half of a UTF-16 surrogate "
                         f"pair and not valid Unicode; fix or remove that \\u escape")


def first_surrogate(text: str) -> int | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _skip_space(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1
