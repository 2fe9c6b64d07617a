"""Cases found by a red-team pass over generate, classify, summarize and translate (issue 11:
"look for more of the same kind yourself"). Each failed before its fix; real CLI, tiny models."""

from __future__ import annotations

import json

import pytest

from tests.tasks import tiny_classifiers as tc
from tests.tasks import tiny_seq2seq


@pytest.fixture(scope="module")
def embedder(session_dir):
    return str(tc.built_once(session_dir / "tiny-embedding", tc.build_embedding))


@pytest.fixture(scope="module")
def marian(session_dir):
    return str(tc.built_once(session_dir / "opus-mt-en-de", tiny_seq2seq.build_marian))


@pytest.fixture(scope="module")
def bart(session_dir):
    return str(tc.built_once(session_dir / "sum-bart", tiny_seq2seq.build_bart))


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptcli: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ---------------------------------------------------------------- the user's fields are never written over


CLASHES = [
    ("generate", {"prompt": "hello", "text": "my own text"}, "text", []),
    ("generate", {"prompt": "hello", "finish_reason": "mine"}, "finish_reason", []),
    ("generate", {"prompt": "hello", "sample": 7}, "sample", []),  # with -n 1 too: part of the resume key
    ("classify", {"text": "the sun", "label": "day"}, "label", ["--labels", "day,night"]),
    ("classify", {"text": "the sun", "scores": [1]}, "scores", ["--labels", "day,night"]),
    ("classify", {"text": "the sun", "labels": ["day"]}, "labels", ["--labels", "day,night", "--multi-label"]),
    ("summarize", {"text": "the cat sat on the mat", "summary": "a cat sat"}, "summary", []),
    ("translate", {"text": "hello world", "translation": "hallo Welt"}, "translation", ["--to", "de"]),
]


@pytest.mark.parametrize("command, record, field, extra", CLASHES, ids=[f"{c[0]}-{c[2]}" for c in CLASHES])
def test_an_input_field_named_like_a_result_field_is_refused_not_overwritten(
        cli, tmp_path, tiny_llama, embedder, bart, marian, command, record, field, extra):
    model = {"generate": tiny_llama, "classify": embedder, "summarize": bart, "translate": marian}[command]
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"id": 1, **record}) + "\n")
    result = cli(command, "--input", data, "-m", model, "--json", *extra)
    assert_one_line_error(result, 2, "in.jsonl:1", repr(field), "rename it")
    assert result.stdout == ""


# ---------------------------------------------------------------- --overwrite replaces only once there is a result


@pytest.mark.parametrize("model", ["tiny_bert", "nobody/no-such-model"])
def test_overwrite_keeps_the_old_results_when_the_new_run_fails_before_its_first_result(
        cli, tmp_path, tiny_llama, tiny_bert, model):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\nworld\n")
    out = tmp_path / "out.jsonl"
    args = ["generate", "--input", prompts, "-o", out, "--max-new-tokens", "2"]
    assert cli(*args, "-m", tiny_llama).exit_code == 0
    before = out.read_bytes(), (tmp_path / "out.jsonl.gptcli.json").read_bytes()
    failed = cli(*args, "-m", tiny_bert if model == "tiny_bert" else model, "--overwrite")
    assert failed.exit_code in (1, 2) and "gptcli: error: " in failed.stderr
    assert (out.read_bytes(), (tmp_path / "out.jsonl.gptcli.json").read_bytes()) == before
    resumed = cli(*args, "-m", tiny_llama)  # the old run is still whole, and still the file's
    assert resumed.exit_code == 0 and "nothing to do" in resumed.stderr, resumed.stderr
