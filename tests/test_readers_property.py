"""Property: whatever bytes a user's file holds, the readers answer with records or an InputError
(a one-line message naming the file) - never another exception."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptcli import textio
from gptcli.errors import GptcliError
from gptcli.finetune import data

# Bytes that look like the files users feed us: JSON lines, text lines, and damage in between.
JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=3), max_leaves=8)
LINE = st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode),
                 JSONISH.map(lambda value: json.dumps(value).encode()),
                 st.fixed_dictionaries({"prompt": JSONISH}).map(lambda value: json.dumps(value).encode()),
                 st.fixed_dictionaries({"text": st.text(max_size=20)}).map(lambda v: json.dumps(v).encode()))
FILE_BYTES = st.lists(LINE, max_size=6).map(lambda lines: b"\n".join(lines)) | st.binary(max_size=200)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _only_documented_errors(read, path) -> None:
    try:
        read()
    except GptcliError as error:
        assert error.exit_code == 2, error.message
        assert path.name in error.message
        assert "\n" not in error.message.strip() or "more problems" in error.message


@SETTINGS
@given(content=FILE_BYTES, suffix=st.sampled_from([".jsonl", ".txt"]))
def test_prompt_reader_never_crashes(tmp_path, content, suffix):
    path = tmp_path / f"input{suffix}"
    path.write_bytes(content)
    _only_documented_errors(lambda: textio.read_records(str(path), "prompt"), path)


@SETTINGS
@given(content=FILE_BYTES)
def test_training_data_reader_never_crashes(tmp_path, content):
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    _only_documented_errors(lambda: data.load_rows(str(path)), path)
