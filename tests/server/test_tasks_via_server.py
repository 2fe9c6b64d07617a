"""`gptcli summarize|translate|classify --server URL`: the work done by one real `gptcli serve`, with the
records, warnings, resume and errors of a local run, from a client process that cannot import torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.server import assert_clean_stderr, running_server
from tests.server.test_commands_via_server import NO_TORCH
from tests.tasks import tiny_seq2seq

LOCAL = ["--dtype", "float32"]
SERVED = "tasks-llama-512"  # the name the server answers to for long_llama's folder


@pytest.fixture(scope="module")
def long_llama(session_dir):
    """tiny_llama with a context of 512: summarize's instruction alone takes 117 of tiny_llama's 128 tokens."""
    return tiny_seq2seq.long_llama(session_dir)


@pytest.fixture(scope="module")
def server(long_llama, embedder, session_dir):
    args = ["--model", long_llama, "--dtype", "float32", "--embedding-model", embedder]
    with running_server(args, session_dir) as process:
        yield process


def _client(*args, stdin: str = "") -> subprocess.CompletedProcess:
    """gptcli in a process of its own that cannot import torch or transformers."""
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=120)


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def _same_batch_and_resume(cli, server, tmp_path, local_args: list, remote_args: list,
                           keep: int) -> tuple[str, list[dict]]:
    """The --output of a local run and of a run through the server are the same file, warnings too; cut
    to ``keep`` records, a rerun through the server writes the rest. The remote run's stderr, the records."""
    local_out, remote_out = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    local = cli(*local_args, *LOCAL, "--output", local_out)
    assert local.exit_code == 0, local.stderr
    remote = _client(*remote_args, "--server", server.url, "--output", remote_out)
    assert remote.returncode == 0, remote.stderr
    expected = local_out.read_text(encoding="utf-8")
    assert remote_out.read_text(encoding="utf-8") == expected
    assert _warnings(remote.stderr) == _warnings(local.stderr)
    remote_out.write_text("".join(expected.splitlines(keepends=True)[:keep]), encoding="utf-8")
    resumed = _client(*remote_args, "--server", server.url, "--output", remote_out)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {keep} results" in resumed.stderr
    assert remote_out.read_text(encoding="utf-8") == expected
    return remote.stderr, [json.loads(line) for line in expected.splitlines()]


def _same_error(cli, server, local_args: list, remote_args: list, stdin: str = "", code: int = 2) -> str:
    local = cli(*local_args, *LOCAL, input=stdin)
    remote = _client(*remote_args, "--server", server.url, stdin=stdin)
    assert local.exit_code == remote.returncode == code, (local.stderr, remote.stderr)
    assert remote.stderr.strip().splitlines()[-1] == local.stderr.strip().splitlines()[-1]
    return remote.stderr


def _jsonl(path, rows: list[dict]):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_summarize_through_the_server_is_a_local_run(server, cli, long_llama, tmp_path):
    words = "the river runs past two red houses and a mill where the old baker sells bread each morning"
    documents = _jsonl(tmp_path / "docs.jsonl", [
        {"id": f"d{i}", "text": text, "topic": i} for i, text in
        enumerate(["a cat sat on the mat.", "rain fell all day.", ". ".join([words] * 6) + ".", "hello world",
                   "two dogs ran to the sea and back."])])
    options = ["--input", documents, "--max-new-tokens", "6", "--max-input-tokens", "40"]
    stderr, records = _same_batch_and_resume(cli, server, tmp_path, ["summarize", "-m", long_llama, *options],
                                             ["summarize", *options, "--stats"], keep=2)
    assert records[2]["levels"] >= 1 and records[2]["topic"] == 2  # map-reduce ran; the input's fields carried
    assert f"server {server.url} · 5 documents" in stderr
    too_long = ["summarize", ". ".join([words] * 2), "--overflow", "error", "--max-new-tokens", "6",
                "--max-input-tokens", "40"]
    _same_error(cli, server, [*too_long, "-m", long_llama], too_long)


def test_translate_through_the_server_is_a_local_run(server, cli, long_llama, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("Good morning.\n\nThe cat sat on the mat. It was warm.\nTwo red houses by the river.\n"
                     "Where is the station?\n", encoding="utf-8")
    options = ["--input", lines, "--to", "de", "--max-new-tokens", "8"]
    stderr, records = _same_batch_and_resume(cli, server, tmp_path, ["translate", "-m", long_llama, *options],
                                             ["translate", *options], keep=3)
    assert records[1]["translation"] == "" and len(records) == 5  # the blank line stays
    assert "do not look like" in stderr or "stopped at --max-new-tokens" in stderr  # the run's notes came back
    text = _client("translate", "--server", server.url, "--to", "fr", "--max-new-tokens", "6", "--stats",
                   stdin="hello\n\nworld\n")
    local = cli("translate", "-m", long_llama, *LOCAL, "--to", "fr", "--max-new-tokens", "6",
                input="hello\n\nworld\n")
    assert text.returncode == 0 and text.stdout == local.stdout  # line-true: the blank line stays
    assert f"server {server.url} · 3 lines" in text.stderr
    _same_error(cli, server, ["translate", "-m", long_llama, "hello", "--to", "qq"],
                ["translate", "hello", "--to", "qq"])


def test_classify_through_the_server_is_a_local_run(server, cli, long_llama, embedder, tmp_path):
    texts = ["red house", "blue river", "two dogs", "the sun", "a cold night", "rain"] * 6
    stdin = "\n".join(texts[:7] + [""] + texts[7:]) + "\n"
    labels = ["--labels", "red house,blue river,two dogs"]
    # No --model: the server's embedding model, as the local run's default is the packaged one.
    local = cli("classify", *labels, "-m", embedder, *LOCAL, "--json", input=stdin)
    remote = _client("classify", *labels, "--json", "--stats", "--server", server.url, stdin=stdin)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == local.stdout and remote.stdout.count("\n") == len(texts) + 1
    assert f"server {server.url} · {len(texts)} texts" in remote.stderr
    records = _jsonl(tmp_path / "texts.jsonl", [{"id": i, "text": text} for i, text in enumerate(texts[:24])])
    # --model tasks-llama-512: the server's causal LM, scoring each label as the answer.
    _same_batch_and_resume(cli, server, tmp_path, ["classify", "--input", records, *labels, "-m", long_llama],
                           ["classify", "--input", records, *labels, "-m", SERVED], keep=7)
    too_long = " ".join(["word"] * 600)  # past the model's context of 512 tokens
    _same_error(cli, server, ["classify", too_long, *labels, "-m", long_llama],
                ["classify", too_long, *labels, "-m", SERVED])


def test_a_model_the_server_does_not_have_and_loading_options_are_refused(server):
    wrong = _client("classify", "hi", "--labels", "a,b", "--model", "another-model", "--server", server.url)
    assert wrong.returncode == 2 and "not served here" in wrong.stderr and SERVED in wrong.stderr
    assert wrong.stderr.count("\n") == 1
    loading = _client("summarize", "hi", "--dtype", "bfloat16", "--server", server.url)
    assert loading.returncode == 2 and "gptcli serve" in loading.stderr
    # Every refusal of the module was an answer, not a failure of the server.
    assert_clean_stderr(server.stderr)
    assert "internal error" not in server.stderr
