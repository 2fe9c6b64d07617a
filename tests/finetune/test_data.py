"""Data: formats detected from the keys; every row validated before any model is loaded."""

from __future__ import annotations

import pytest

from gptcli.errors import InputError
from gptcli.finetune import data
from tests.finetune.conftest import chat_rows, write_jsonl

NO_MODEL = "/nonexistent/model-folder"  # validation must fail first, before this is ever looked at


@pytest.mark.parametrize("row, expected", [
    ({"text": "the cat sat."}, data.TEXT),
    ({"prompt": "what?", "completion": "that."}, data.PROMPT_COMPLETION),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, data.MESSAGES),
    ({"instruction": "say hi", "input": "", "output": "hi"}, data.INSTRUCTION),
])
def test_formats_detected(tmp_path, row, expected):
    rows = data.load_rows(str(write_jsonl(tmp_path / "d.jsonl", [row, row])))
    assert [r.format for r in rows] == [expected, expected]
    assert rows[1].where.endswith("d.jsonl:2")


def test_csv_and_labelled_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nthe sun,positive\nthe night,negative\n")
    rows = data.load_rows(str(path), task="classify")
    assert [r.format for r in rows] == [data.LABELLED] * 2 and rows[0].where.endswith("d.csv:2")
    assert data.labels_of(rows) == ["negative", "positive"]


GOOD = chat_rows(1)[0]


@pytest.mark.parametrize("bad, problem", [
    ('{"messages": [', "not valid JSON"),
    ({"prompt": "what?"}, "missing field 'completion'"),
    ({"prompt": "what?", "completion": 3}, "field 'completion' must be a string, got int"),
    ({"text": "   "}, "field 'text' is empty"),
    ({"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]},
     "unknown role 'wizard'"),
    ({"text": "plain text here"}, "mixed formats"),
    ({"colour": "red"}, "no known fields"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_rows_exit_2_naming_file_and_line(cli, tmp_path, bad, problem):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, bad, GOOD])
    result = cli("finetune", "--data", path, "--model", NO_MODEL, "--output", tmp_path / "out")
    assert result.exit_code == 2
    assert "train.jsonl:3: " in result.stderr and problem in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_all_problems_counted_not_only_the_first(tmp_path):
    rows = [GOOD, {"prompt": 1}, "{oops", GOOD, {"text": ""}]
    with pytest.raises(InputError) as caught:
        data.load_rows(str(write_jsonl(tmp_path / "t.jsonl", rows)))
    message = caught.value.message
    assert message.startswith(f"{tmp_path / 't.jsonl'}:2: ")
    assert "more problems" in message and "t.jsonl:3: not valid JSON" in message and "t.jsonl:5" in message


def test_eval_fraction_default_holds_out_ten_percent():
    rows = [data.Row(data.TEXT, {"text": str(i)}, str(i)) for i in range(40)]
    train, evals = data.split_rows(rows, None, seed=1)
    assert len(evals) == 4 and len(train) == 36 and not {r.where for r in train} & {r.where for r in evals}
    assert data.split_rows(rows[:10], None, seed=1)[1] == []  # too few rows: no split unless asked


def test_json_array_and_parquet_files_read_like_jsonl(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"q{i}?", "completion": f"a{i}."} for i in range(3)]
    array = tmp_path / "d.json"
    array.write_text(json.dumps(rows))
    table = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), table)
    for path in (array, table):
        loaded = data.load_rows(str(path))
        assert [r.format for r in loaded] == [data.PROMPT_COMPLETION] * 3, path
        assert [r.fields["completion"] for r in loaded] == ["a0.", "a1.", "a2."], path
