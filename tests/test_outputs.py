"""--output belongs to the user until gptcli wrote it: ownership, run identity, one writer, streams,
signals. Every case checks that what the user had is left byte for byte as it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from tests.conftest import gptcli_command, interruptible

EXACT = ["--label-template", "{}"]


def prompts(tmp_path, count: int = 4, name: str = "p.txt"):
    path = tmp_path / name
    path.write_text("".join(f"prompt number {i}\n" for i in range(count)))
    return path


def generate_args(tmp_path, model, *extra):
    return ["generate", "--input", tmp_path / "p.txt", "-o", tmp_path / "out.jsonl", "-m", model,
            "--max-new-tokens", "3", *extra]


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptcli: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ---------------------------------------------------------------- ownership


@pytest.mark.parametrize("content", [b'{"note": "mine"}', b"a note without a newline", b"two\nlines\n",
                                     b'{"id": 1, "text": "looks like ours"}\n'])
def test_a_file_gptcli_did_not_write_is_refused_and_left_as_it_was(cli, tiny_llama, tmp_path, content):
    prompts(tmp_path)
    out = tmp_path / "out.jsonl"
    out.write_bytes(content)
    result = cli(*generate_args(tmp_path, tiny_llama))
    assert_one_line_error(result, 2, "was not written by gptcli", str(out))
    assert out.read_bytes() == content
    # --overwrite does not change that: gptcli only ever replaces its own results
    assert_one_line_error(cli(*generate_args(tmp_path, tiny_llama, "--overwrite")), 2, "not written by gptcli")
    assert out.read_bytes() == content


def test_labels_file_as_output_is_refused(cli, embedder, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("red house\nblue river\n")
    result = cli("classify", "blue river", "--labels-file", labels, "--output", labels, "-m", embedder, *EXACT)
    assert_one_line_error(result, 2, "is the input file")
    assert labels.read_text() == "red house\nblue river\n"


def test_an_empty_file_is_taken_and_a_run_record_is_written_beside_it(cli, tiny_llama, tmp_path):
    prompts(tmp_path)
    out = tmp_path / "out.jsonl"
    out.touch()  # what `mktemp` gives
    assert cli(*generate_args(tmp_path, tiny_llama)).exit_code == 0
    assert len(out.read_text().splitlines()) == 4
    record = json.loads((tmp_path / "out.jsonl.gptcli.json").read_text())
    assert record["command"] == "generate" and record["settings"]["--max-new-tokens"] == 3


def test_a_torn_last_line_is_dropped_only_when_it_is_a_gptcli_record(cli, tiny_llama, tmp_path):
    prompts(tmp_path)
    out = tmp_path / "out.jsonl"
    assert cli(*generate_args(tmp_path, tiny_llama)).exit_code == 0
    whole = out.read_bytes()
    out.write_bytes(whole + b"appended by hand")
    assert_one_line_error(cli(*generate_args(tmp_path, tiny_llama)), 2, "not a gptcli result record")
    assert out.read_bytes() == whole + b"appended by hand"


def test_an_edited_line_that_is_not_a_record_is_refused(cli, tiny_llama, tmp_path):
    prompts(tmp_path)
    out = tmp_path / "out.jsonl"
    assert cli(*generate_args(tmp_path, tiny_llama)).exit_code == 0
    lines = out.read_text().splitlines()
    edited = "\n".join([lines[0], "# my comment", *lines[1:]]) + "\n"
    out.write_text(edited)
    assert_one_line_error(cli(*generate_args(tmp_path, tiny_llama)), 2, f"{out}:2")
    assert out.read_text() == edited


# ---------------------------------------------------------------- run identity


@pytest.mark.parametrize("change,names", [
    (["--max-new-tokens", "5"], "--max-new-tokens was 3, now 5"),
    (["--temperature", "0.5", "--seed", "1"], "--seed was not given, now 1"),
    (["--system", "be brief"], "--system"),
    (["--raw"], "--raw was false, now true"),
    (["--stop", "x"], "--stop"),
])
def test_other_options_are_refused_naming_what_changed(cli, tiny_llama, tmp_path, change, names):
    prompts(tmp_path)
    assert cli(*generate_args(tmp_path, tiny_llama)).exit_code == 0
    before = (tmp_path / "out.jsonl").read_bytes()
    result = cli(*generate_args(tmp_path, tiny_llama, *change))
    assert_one_line_error(result, 2, names, "--overwrite")
    assert (tmp_path / "out.jsonl").read_bytes() == before


def test_another_model_is_refused(cli, tiny_llama, tiny_gpt2, tmp_path):
    prompts(tmp_path)
    assert cli(*generate_args(tmp_path, tiny_llama)).exit_code == 0
    assert_one_line_error(cli(*generate_args(tmp_path, tiny_gpt2)), 2, "--model was", str(tiny_gpt2))


def test_a_model_rewritten_in_place_is_another_model(cli, tiny_llama, tmp_path):
    import shutil

    model = tmp_path / "my-model"
    shutil.copytree(tiny_llama, model)
    prompts(tmp_path)
    assert cli(*generate_args(tmp_path, model)).exit_code == 0
    weights = model / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # fine-tuned again
    assert_one_line_error(cli(*generate_args(tmp_path, model)), 2, "--model was")


def test_changed_or_removed_inputs_are_refused_and_appended_ones_are_run(cli, tiny_llama, tmp_path):
    source = prompts(tmp_path)
    out = tmp_path / "out.jsonl"
    assert cli(*generate_args(tmp_path, tiny_llama)).exit_code == 0
    done = out.read_text()
    source.write_text("prompt number 0\nsomething else\nprompt number 2\nprompt number 3\n")
    assert_one_line_error(cli(*generate_args(tmp_path, tiny_llama)), 2, "id 2", "changed")
    source.write_text("prompt number 0\nprompt number 1\n")
    assert_one_line_error(cli(*generate_args(tmp_path, tiny_llama)), 2, "id 3", "no longer in the input")
    assert out.read_text() == done
    prompts(tmp_path, 6)  # two more prompts at the end: the run continues
    result = cli(*generate_args(tmp_path, tiny_llama))
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert out.read_text().startswith(done) and [r["id"] for r in records] == [1, 2, 3, 4, 5, 6]


def test_overwrite_replaces_gptcli_results(cli, tiny_llama, tmp_path):
    prompts(tmp_path)
    out = tmp_path / "out.jsonl"
    assert cli(*generate_args(tmp_path, tiny_llama)).exit_code == 0
    result = cli(*generate_args(tmp_path, tiny_llama, "--max-new-tokens", "1", "--overwrite"))
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 4 and all(r["generated_tokens"] <= 1 for r in records)
    assert cli(*generate_args(tmp_path, tiny_llama, "--max-new-tokens", "1")).exit_code == 0  # resumes the new run


def test_classify_other_labels_are_refused(cli, embedder, tmp_path):
    source = tmp_path / "t.txt"
    source.write_text("red house\nblue river\n")
    out = tmp_path / "out.jsonl"
    base = ["classify", "--input", source, "-o", out, "-m", embedder, *EXACT]
    assert cli(*base, "--labels", "red house,blue river").exit_code == 0
    assert_one_line_error(cli(*base, "--labels", "red house,green tree"), 2, "--labels was")
    assert "nothing to do" in cli(*base, "--labels", "red house,blue river").stderr


def test_summarize_length_and_translate_target_are_part_of_the_run(cli, bart, marian, tmp_path):
    docs = tmp_path / "d.txt"
    docs.write_text("the sun is red.\nthe sea is blue.\n")
    out = tmp_path / "s.jsonl"
    base = ["summarize", "--input", docs, "-o", out, "-m", bart, "--max-new-tokens", "3"]
    assert cli(*base, "--length", "short").exit_code == 0
    assert_one_line_error(cli(*base, "--length", "long"), 2, "--length was \"short\", now \"long\"")
    out = tmp_path / "t.jsonl"
    base = ["translate", "--input", docs, "-o", out, "-m", marian, "--max-new-tokens", "3"]
    assert cli(*base, "--to", "de").exit_code == 0
    assert_one_line_error(cli(*base, "--to", "de", "--from", "en"), 2, "--from was not given")
    summarize_into_it = cli("summarize", "--input", docs, "-o", out, "-m", bart, "--max-new-tokens", "3")
    assert_one_line_error(summarize_into_it, 2, "holds results of `gptcli translate`")


# ---------------------------------------------------------------- one writer, streams, signals


def _slow_batch(tmp_path, model, count=40):
    prompts(tmp_path, count)
    return gptcli_command() + [str(a) for a in generate_args(tmp_path, model, "--max-new-tokens", "30",
                                                             "--batch-size", "1")]


def _wait_for_lines(path, count, proc, seconds=90.0):
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.02)


def test_a_second_writer_fails_at_once_naming_the_first(tiny_llama, tmp_path):
    command = _slow_batch(tmp_path, tiny_llama)
    out = tmp_path / "out.jsonl"
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_lines(out, 1, first)
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stderr
    assert f"pid {first.pid}" in second.stderr and "being written" in second.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == list(range(1, 41))  # one record each, not 80


def test_a_fifo_output_is_written_as_a_stream(tiny_llama, tmp_path):
    prompts(tmp_path)
    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(open(fifo).read().splitlines()))
    reader.start()
    args = [str(a) for a in generate_args(tmp_path, tiny_llama)]
    args[args.index(str(tmp_path / "out.jsonl"))] = str(fifo)
    result = subprocess.run(gptcli_command() + args, capture_output=True, text=True, timeout=120)
    reader.join(timeout=30)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in got] == [1, 2, 3, 4]
    assert not (tmp_path / "results.fifo.gptcli.json").exists()


def test_dev_stdout_as_output_writes_the_records_to_stdout(tiny_llama, tmp_path):
    prompts(tmp_path)
    args = [str(a) for a in generate_args(tmp_path, tiny_llama)]
    args[args.index(str(tmp_path / "out.jsonl"))] = "/dev/stdout"
    result = subprocess.run(gptcli_command() + args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1, 2, 3, 4]


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_keep_whole_records_and_a_rerun_completes(tiny_llama, tmp_path, signum, code):
    # Exit 0 instead of 129 (every record written) meant SIGHUP was ignored: the suite ran under nohup, and
    # the child inherited that until interruptible() reset it. 80 records keep the batch going meanwhile.
    command = _slow_batch(tmp_path, tiny_llama, 80)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    _wait_for_lines(out, 2, proc)
    proc.send_signal(signum)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == code, stderr
    assert stderr.strip().splitlines()[-1].startswith(f"gptcli: stopped by {signal.Signals(signum).name}")
    text = out.read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == list(range(1, 81))


@pytest.mark.parametrize("command", [["generate", "hello"], ["summarize", "some text"], ["embed", "some text"]])
def test_output_dash_is_refused_with_the_stdout_option(cli, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    done = cli(*command, "--output", "-")
    assert done.exit_code == 2 and "--json" in done.stderr and done.stdout == ""
    assert not (tmp_path / "-").exists()
