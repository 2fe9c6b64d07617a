"""--num-processes N at its edges, with real torchrun processes and tiny models: leftover parts from a
killed run (other options, changed inputs, another N), a killed --overwrite run, stdin through `--input -`,
a rank failing, a --parts path that is not a folder, and the stderr of a resumed run (one line per fact, each process's summary saying which process it is)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import gptcli_command

PROMPTS = 12


def _gptcli(*args, cwd, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*gptcli_command(), *map(str, args)], input=input, capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if line.strip()]


def _generate(model, max_new_tokens: int = 24) -> tuple:
    return ("generate", "--model", model, "--input", "prompts.jsonl", "--max-new-tokens", max_new_tokens,
            "--device", "cpu", "--batch-size", 1)


def _kill_a_rank_once(folder: Path, args: tuple, part: str) -> subprocess.CompletedProcess:
    """Start ``args`` in ``folder``; SIGKILL the rank writing ``part`` once it holds a result."""
    parts = folder / "out.jsonl.gptcli-parts"
    parent = subprocess.Popen([*gptcli_command(), *map(str, args)], cwd=folder, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and parent.poll() is None:
        path, record = parts / part, parts / (part + ".gptcli.json")
        if path.exists() and record.exists() and path.read_text(encoding="utf-8").count("\n") >= 1:
            os.kill(json.loads(record.read_text(encoding="utf-8"))["pid"], signal.SIGKILL)
            break
        time.sleep(0.02)
    else:
        parent.kill()
        pytest.fail(f"{part} got no result in time (exit {parent.poll()})")
    stdout, stderr = parent.communicate(timeout=120)
    assert parent.returncode == 128 + signal.SIGKILL, stderr
    return subprocess.CompletedProcess(args, parent.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def killed(tiny_llama, tmp_path_factory) -> Path:
    """A folder with prompts.jsonl, the one-process results reference.jsonl, and out.jsonl with the parts
    of a 3-process run whose rank 2 was SIGKILLed after its first result."""
    folder = tmp_path_factory.mktemp("killed")
    (folder / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{n}", "prompt": f"tell me about {n} cats"})
                                                  + "\n" for n in range(PROMPTS)), encoding="utf-8")
    assert _gptcli(*_generate(tiny_llama), "--output", "reference.jsonl", cwd=folder).returncode == 0
    _kill_a_rank_once(folder, (*_generate(tiny_llama), "--output", "out.jsonl", "--num-processes", 3), "part-2.jsonl")
    assert _records(folder / "out.jsonl.gptcli-parts" / "part-2.jsonl")
    return folder


def _copy(killed: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(killed, folder)
    return folder


def test_parts_of_other_options_are_refused_in_one_line_then_another_n_finishes_them(killed, tiny_llama, tmp_path):
    folder = _copy(killed, tmp_path)
    parts = folder / "out.jsonl.gptcli-parts"
    before = {p.name: p.read_bytes() for p in parts.iterdir()}
    other = _gptcli(*_generate(tiny_llama, 16), "--output", "out.jsonl", "--num-processes", 2, cwd=folder)
    assert other.returncode == 2, other.stderr
    assert _lines(other.stderr) == [
        "gptcli: error: --output out.jsonl: out.jsonl.gptcli-parts/ holds the unfinished parts of another run "
        "(other options, model or command); rerun that run to finish it, or add --overwrite to start this one over"]
    assert {p.name: p.read_bytes() for p in parts.iterdir()} == before  # nothing written is lost
    # The same run with 2 processes instead of 3: part-2, which no rank writes now, is merged too.
    same = _gptcli(*_generate(tiny_llama), "--output", "out.jsonl", "--num-processes", 2, cwd=folder)
    assert same.returncode == 0, same.stderr
    assert _records(folder / "out.jsonl") == _records(folder / "reference.jsonl")
    assert not parts.exists()


def test_a_changed_input_never_brings_back_the_result_of_its_old_text(killed, tiny_llama, tmp_path):
    """One process refuses an --output holding a result for an input that changed since (exit 2); with
    parts left, a result kept in the part of a rank that no longer runs must not be merged as if current."""
    folder = _copy(killed, tmp_path)
    stale = _records(folder / "out.jsonl.gptcli-parts" / "part-2.jsonl")[0]
    prompts = folder / "prompts.jsonl"
    prompts.write_text(prompts.read_text(encoding="utf-8").replace(stale["prompt"], stale["prompt"] + " and dogs"),
                       encoding="utf-8")
    rerun = _gptcli(*_generate(tiny_llama), "--output", "out.jsonl", "--num-processes", 2, cwd=folder)
    if rerun.returncode == 2:  # refused, as one process refuses: one line that names the input
        assert len(_lines(rerun.stderr)) == 1 and repr(stale["id"]) in rerun.stderr, rerun.stderr
        return
    assert rerun.returncode == 0, rerun.stderr
    wanted = {r["id"]: r["prompt"] for r in _records(prompts)}
    assert [(r["id"], r["prompt"]) for r in _records(folder / "out.jsonl")] == list(wanted.items())


def test_a_killed_overwrite_run_keeps_the_old_results_until_its_rerun_finishes(killed, tiny_llama, tmp_path):
    """Spread, --overwrite replaces the --output only at the merge: a killed run leaves the old results whole
    and its parts; without --overwrite the rerun is refused (the --output holds the other run), and the same
    command again finishes from the parts instead of starting over."""
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("prompts.jsonl", "reference.jsonl", "reference.jsonl.gptcli.json"):
        shutil.copy(killed / name, folder / name.replace("reference", "out"))
    newer = (*_generate(tiny_llama, 16), "--output", "out.jsonl", "--num-processes", 2)
    _kill_a_rank_once(folder, (*newer, "--overwrite"), "part-1.jsonl")
    assert _records(folder / "out.jsonl") == _records(killed / "reference.jsonl")  # the old results, whole
    part = folder / "out.jsonl.gptcli-parts" / "part-1.jsonl"
    kept = _records(part)[0]
    refused = _gptcli(*newer, cwd=folder)
    assert refused.returncode == 2 and "--max-new-tokens was 24, now 16" in refused.stderr, refused.stderr
    # Mark the kept result: a rerun that resumes carries it over; one that starts over would make it anew.
    marked = part.read_text(encoding="utf-8").replace(json.dumps(kept["text"], ensure_ascii=False),
                                                      json.dumps(kept["text"] + " [kept]", ensure_ascii=False), 1)
    assert "[kept]" in marked
    part.write_text(marked, encoding="utf-8")
    rerun = _gptcli(*newer, "--overwrite", cwd=folder)
    assert rerun.returncode == 0, rerun.stderr
    records = _records(folder / "out.jsonl")
    assert [r["id"] for r in records] == [f"p{n}" for n in range(PROMPTS)]
    assert {r["id"]: r["text"] for r in records}[kept["id"]] == kept["text"] + " [kept]"
    assert json.loads((folder / "out.jsonl.gptcli.json").read_text())["settings"]["--max-new-tokens"] == 16
    assert all(r["generated_tokens"] <= 16 for r in records)


def test_jsonl_records_on_stdin_through_input_dash(embedder, tmp_path):
    records = "".join(json.dumps({"id": f"r{n}", "text": f"the film number {n} was fine"}) + "\n" for n in range(3))
    common = ("classify", "--model", embedder, "--labels", "positive,negative", "--device", "cpu", "--input", "-")
    one = _gptcli(*common, "--output", "one.jsonl", cwd=tmp_path, input=records)
    two = _gptcli(*common, "--output", "two.jsonl", "--num-processes", 2, cwd=tmp_path, input=records)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert _records(tmp_path / "two.jsonl") == _records(tmp_path / "one.jsonl")


def test_a_rank_that_fails_gives_one_line_and_its_exit_code(embedder, tmp_path):
    """Rank 1 meets a text too long for the model (bad input, exit 2); rank 0, done, waits at the end: the
    user sees the one line a one-process run gives, not also rank 0's lost connection."""
    (tmp_path / "texts.txt").write_text("a short one\n" + "word " * 3000 + "\nanother short one\n", encoding="utf-8")
    two = _gptcli("embed", "--model", embedder, "--device", "cpu", "--input", "texts.txt", "--output", "two.jsonl",
                  "--num-processes", 2, cwd=tmp_path)
    assert two.returncode == 2
    lines = _lines(two.stderr)
    assert len(lines) == 1 and lines[0].startswith("gptcli: error: texts.txt:2 is 15,000 characters"), lines


def test_a_parts_path_that_is_a_file_is_refused_in_one_line(embedder, tmp_path):
    (tmp_path / "texts.txt").write_text("one\ntwo\n", encoding="utf-8")
    blocker = tmp_path / "out.jsonl.gptcli-parts"
    blocker.write_text("mine\n", encoding="utf-8")
    run = _gptcli("embed", "--model", embedder, "--device", "cpu", "--input", "texts.txt", "--output", "out.jsonl",
                  "--num-processes", 2, cwd=tmp_path)
    assert blocker.read_text(encoding="utf-8") == "mine\n"  # not gptcli's: left as it is
    assert run.returncode == 2, run.stderr
    lines = _lines(run.stderr)
    assert len(lines) == 1 and lines[0].startswith("gptcli: error: ") and "out.jsonl.gptcli-parts" in lines[0], lines


def test_a_resumed_run_says_each_thing_once(killed, tiny_llama, tmp_path):
    """An --output a one-process run left a quarter done, finished by 2 processes: the same records as one
    process, and on stderr each line once (no second "resuming", no per-process copies of the summary warning)."""
    shutil.copy(killed / "prompts.jsonl", tmp_path / "all.jsonl")
    prompts = tmp_path / "prompts.jsonl"
    rows = (tmp_path / "all.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    prompts.write_text("".join(rows[:3]), encoding="utf-8")
    assert _gptcli(*_generate(tiny_llama), "--output", "out.jsonl", cwd=tmp_path).returncode == 0
    prompts.write_text("".join(rows), encoding="utf-8")
    two = _gptcli(*_generate(tiny_llama), "--output", "out.jsonl", "--num-processes", 2, cwd=tmp_path)
    assert two.returncode == 0, two.stderr
    assert _records(tmp_path / "out.jsonl") == _records(killed / "reference.jsonl")
    lines = _lines(two.stderr)
    assert lines.count("resuming: 3 results already in out.jsonl") == 1, lines
    assert not any("gptcli-parts" in line for line in lines), lines
    # Each process sums up its own share, and says which it is.
    summaries = [line for line in lines if "stopped at --max-new-tokens" in line]
    assert sorted(line.split(":")[0] for line in summaries) == ["process 1 of 2", "process 2 of 2"], lines
