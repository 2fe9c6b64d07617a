"""--num-processes N and launcher-started runs (issue 15): the inputs spread over real processes (torchrun,
gloo on CPU), the --output holding one record per input, in input order, equal to a one-process run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import numpy
import pytest

from gptcli.cli.spread import without_num_processes
from tests.conftest import gptcli_command


def _gptcli(*args, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*gptcli_command(), *map(str, args)], input=input, capture_output=True, text=True,
                          timeout=300, env=env)


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _prompts(tmp_path, count: int):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{n}", "prompt": f"tell me about {n} cats"}) + "\n"
                            for n in range(count)), encoding="utf-8")
    return path


def test_generate_in_two_processes_writes_what_one_process_writes(tiny_llama, tmp_path):
    prompts = _prompts(tmp_path, 9)
    common = ("generate", "--model", tiny_llama, "--input", prompts, "--max-new-tokens", 6, "--device", "cpu",
              "--temperature", 0.8, "--seed", 7, "-n", 2)
    one = _gptcli(*common, "--output", tmp_path / "one.jsonl")
    two = _gptcli(*common, "--output", tmp_path / "two.jsonl", "--num-processes", 2)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    expected = _records(tmp_path / "one.jsonl")
    assert [(r["id"], r["sample"]) for r in expected] == [(f"p{n}", s) for n in range(9) for s in (0, 1)]
    assert _records(tmp_path / "two.jsonl") == expected  # seeded samples too: each follows its input
    assert two.stdout == ""
    assert not (tmp_path / "two.jsonl.gptcli-parts").exists()  # the parts are merged and removed


def test_classify_from_stdin_in_two_processes(embedder, tmp_path):
    lines = "".join(f"review {n}: the film was {'great' if n % 2 else 'awful'}\n" for n in range(7))
    common = ("classify", "--model", embedder, "--labels", "positive,negative", "--device", "cpu")
    one = _gptcli(*common, "--output", tmp_path / "one.jsonl", input=lines)
    two = _gptcli(*common, "--output", tmp_path / "two.jsonl", "--num-processes", "2", input=lines)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    assert _records(tmp_path / "two.jsonl") == _records(tmp_path / "one.jsonl")
    assert [r["id"] for r in _records(tmp_path / "two.jsonl")] == list(range(1, 8))


def test_accelerate_launch_embeds_into_one_array(embedder, tmp_path):
    """`accelerate launch -m gptcli ...`: the launcher started the ranks, gptcli only joins them."""
    texts = tmp_path / "texts.txt"
    texts.write_text("".join(f"sentence number {n} about the sea\n" for n in range(11)), encoding="utf-8")
    one = _gptcli("embed", "--model", embedder, "--input", texts, "--output", tmp_path / "one.npy")
    accelerate = os.path.join(os.path.dirname(gptcli_command()[0]), "accelerate")
    launched = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "gptcli", "embed",
                               "--model", embedder, "--input", str(texts), "--output", str(tmp_path / "two.npy")],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert one.returncode == 0 and launched.returncode == 0, launched.stderr[-2000:]
    expected, got = numpy.load(tmp_path / "one.npy"), numpy.load(tmp_path / "two.npy")
    assert got.shape == expected.shape == (11, expected.shape[1])
    assert numpy.array_equal(got, expected)


def test_a_rerun_after_a_rank_was_killed_completes_exactly(tiny_llama, tmp_path):
    prompts = _prompts(tmp_path, 24)
    common = ("generate", "--model", tiny_llama, "--input", prompts, "--max-new-tokens", 40, "--device", "cpu",
              "--batch-size", 1)
    assert _gptcli(*common, "--output", tmp_path / "one.jsonl").returncode == 0
    out = tmp_path / "two.jsonl"
    parts = tmp_path / "two.jsonl.gptcli-parts"
    parent = subprocess.Popen([*gptcli_command(), *map(str, common), "--output", str(out), "--num-processes", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = _a_rank_with_results(parts, parent)
    os.kill(victim, signal.SIGKILL)
    _, stderr = parent.communicate(timeout=120)
    assert parent.returncode == 128 + signal.SIGKILL, stderr
    assert stderr.strip().splitlines()[-1] == ("gptcli: error: a worker process was stopped by SIGKILL; the results "
                                               "already written are kept: rerun the same command to finish")
    kept = sum(len(_records(p)) for p in parts.glob("part-*.jsonl"))
    assert kept >= 1
    rerun = _gptcli(*common, "--output", out, "--num-processes", 2)
    assert rerun.returncode == 0, rerun.stderr
    assert _records(out) == _records(tmp_path / "one.jsonl")
    assert not parts.exists()


def _a_rank_with_results(parts, parent, seconds: float = 120) -> int:
    """The pid of a rank that has written a result to its part (from the part's run record)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and parent.poll() is None:
        for part in sorted(parts.glob("part-*.jsonl")) if parts.exists() else ():
            record = part.with_name(part.name + ".gptcli.json")
            if part.read_text(encoding="utf-8").count("\n") >= 1 and record.exists():
                return json.loads(record.read_text(encoding="utf-8"))["pid"]
        time.sleep(0.05)
    parent.kill()
    pytest.fail(f"no rank wrote a result in time (exit {parent.poll()})")


@pytest.mark.parametrize("args, message", [
    (("--num-processes", "2"), "--num-processes 2 writes its results through --output FILE"),
    (("--num-processes", "2", "--output", "/dev/stdout"), "--num-processes 2 writes its results through --output FILE"),
    (("--num-processes", "2", "--output", "{out}", "--server", "http://127.0.0.1:9"),
     "--num-processes 2 does not apply with --server"),
    (("--num-processes", "0", "--output", "{out}"), "Invalid value for '--num-processes'"),
])
def test_options_that_cannot_be_spread_are_refused_before_anything_runs(cli, tmp_path, args, message):
    args = [a.replace("{out}", str(tmp_path / "out.jsonl")) for a in args]
    result = cli("classify", "--labels", "a,b", "some text", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_bad_input_is_exit_2_before_any_process_starts(cli, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "fine"}\n{"txet": "typo"}\n', encoding="utf-8")
    started = time.perf_counter()
    result = cli("classify", "--labels", "a,b", "--input", data, "--output", tmp_path / "out.jsonl",
                 "--num-processes", "2")
    assert result.exit_code == 2
    assert f"{data}:2: missing field 'text'" in result.stderr
    assert time.perf_counter() - started < 5  # no torchrun, no model
    assert not (tmp_path / "out.jsonl.gptcli-parts").exists()


def test_inside_a_launcher(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    twice = cli("classify", "--labels", "a,b", "x", "--output", tmp_path / "o.jsonl", "--num-processes", "2")
    assert twice.exit_code == 2 and "inside a launcher that already started 2 processes" in twice.stderr
    no_output = cli("classify", "--labels", "a,b", "x")
    assert no_output.exit_code == 2 and "a run in 2 processes (WORLD_SIZE) writes its results" in no_output.stderr
    piped = cli("classify", "--labels", "a,b", "--output", tmp_path / "o.jsonl", input="one\ntwo\n")
    assert piped.exit_code == 2 and "cannot share stdin" in piped.stderr


def test_the_processes_run_the_command_line_less_its_num_processes():
    assert without_num_processes(["-v", "generate", "--num-processes", "4", "-o", "x", "--num-processes=2", "p"]) \
        == ["-v", "generate", "-o", "x", "p"]
    assert without_num_processes(["generate", "--", "--num-processes", "3"]) == ["generate", "--", "--num-processes", "3"]
