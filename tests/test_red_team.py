"""Cases found by a red-team pass over generate, classify, summarize and translate (issue 11:
"look for more of the same kind yourself"). Each failed before its fix; real CLI, tiny models."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.conftest import gptcli_command, interruptible


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
    # a reference kept to compare with (a gold label, summary or translation) points to gptcli eval
    assert (f"gptcli eval {command}" in result.stderr) == (field in ("label", "summary", "translation"))


# ---------------------------------------------------------------- --overwrite replaces only once there is a result


@pytest.mark.parametrize("model", ["tiny_bert", "nobody/no-such-model"])
def test_overwrite_keeps_the_old_results_when_the_new_run_fails_before_its_first_result(
        cli, tmp_path, tiny_llama, tiny_bert, model, hub_offline):
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


# ---------------------------------------------------------------- --output names and run records that cannot be right


@pytest.mark.parametrize("edit", [{"settings": ["x"]}, {"inputs": [1]}, {"command": 5}, {"settings": None}])
def test_an_edited_run_record_of_the_wrong_shape_is_a_one_line_refusal(cli, tmp_path, tiny_llama, edit):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    out, record = tmp_path / "out.jsonl", tmp_path / "out.jsonl.gptcli.json"
    args = ["generate", "--input", prompts, "-o", out, "-m", tiny_llama, "--max-new-tokens", "2"]
    assert cli(*args).exit_code == 0
    record.write_text(json.dumps({**json.loads(record.read_text()), **edit}))
    before = out.read_bytes(), record.read_bytes()
    assert_one_line_error(cli(*args), 2, "out.jsonl.gptcli.json is damaged", "give a new --output")
    assert_one_line_error(cli(*args, "--overwrite"), 2, "is damaged")
    assert (out.read_bytes(), record.read_bytes()) == before


def test_an_output_name_too_long_for_its_run_record_is_refused_before_anything_is_made(cli, tmp_path, tiny_llama):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    fits = "x" * 237 + ".jsonl"  # 243 bytes: with .gptcli.json, 255
    assert cli("generate", "-i", prompts, "-o", tmp_path / fits, "-m", tiny_llama, "--max-new-tokens", "1").exit_code == 0
    assert (tmp_path / (fits + ".gptcli.json")).is_file()
    too_long = "y" * 238 + ".jsonl"
    result = cli("generate", "-i", prompts, "-o", tmp_path / too_long, "-m", tiny_llama)
    assert_one_line_error(result, 2, "the file name is 244 bytes", "at most 243", "shorter name")
    deep = tmp_path.joinpath(*["abcdefgh"] * 600, "out.jsonl")  # past PATH_MAX
    assert_one_line_error(cli("generate", "-i", prompts, "-o", deep, "-m", tiny_llama), 2, "--output", "shorter path")
    assert sorted(p.name[:1] for p in tmp_path.iterdir()) == ["p", "x", "x"]


def test_a_run_record_path_that_is_a_folder_and_an_empty_output_name_are_named(cli, tmp_path, tiny_llama):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    (tmp_path / "out.jsonl.gptcli.json").mkdir()
    result = cli("generate", "-i", prompts, "-o", tmp_path / "out.jsonl", "-m", tiny_llama)
    assert_one_line_error(result, 2, "where gptcli keeps the run record, is not a file")
    assert not (tmp_path / "out.jsonl").exists()
    assert_one_line_error(cli("generate", "-i", prompts, "-o", "", "-m", tiny_llama), 2, "--output is empty")


# ---------------------------------------------------------------- signals


def _batch(tmp_path, model, count: int) -> list[str]:
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt number {i} about the sea\n" for i in range(count)))
    return gptcli_command() + ["generate", "--input", str(prompts), "-o", str(tmp_path / "out.jsonl"), "-m",
                               str(model), "--max-new-tokens", "40", "--batch-size", "1"]


def _wait_for_records(out, count: int, proc) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= count:
            return
        time.sleep(0.05)
    raise AssertionError("the run did not write its first records in time")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_burst_of_signals_ends_with_one_message_and_the_signals_exit_code(tiny_llama, tmp_path, signum, code):
    """Ctrl-C pressed again and again (or a supervisor that repeats SIGTERM): the later signals
    land in the clean-up or the interpreter's shutdown, which printed 'Exception ignored in
    atexit callback ... KeyboardInterrupt' and died of the signal (-2) instead of exiting 130."""
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(_batch(tmp_path, tiny_llama, 200), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=interruptible)
    _wait_for_records(out, 2, proc)
    for _ in range(40):
        if proc.poll() is not None:
            break
        proc.send_signal(signum)
        time.sleep(0.003)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and all(line.startswith("gptcli: ") for line in stderr.splitlines()), stderr
    text = out.read_text()
    assert text == "" or (text.endswith("\n") and all(json.loads(line) for line in text.splitlines()))


# ---------------------------------------------------------------- a result cut by a token limit says so


def test_a_translation_cut_at_max_new_tokens_says_so(cli, marian):
    """Marian (like the opus-mt checkpoints) forces an EOS into the last place, so a cut row looked
    ended: the translation came out cut, exit 0, with no word on stderr and nothing in the record."""
    result = cli("translate", "hello world the cat sat on the mat and the dog ran", "--to", "de", "-m", marian,
                 "--max-new-tokens", "3", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["finish_reason"] == "length" and record["generated_tokens"] == 3
    assert result.stderr.strip() == ("warning: 1 of 1 lines stopped at --max-new-tokens 3 before the translation "
                                     "ended (finish_reason length); raise it for whole translations")


# ---------------------------------------------------------------- values that cannot be right, before loading


@pytest.mark.parametrize("values, option", [
    (["--temperature", "1e-40"], "--temperature"),
    (["--temperature", "1e-320", "--top-k", "3"], "--temperature"),
    (["--temperature", "0.5", "--repetition-penalty", "1e-300"], "--repetition-penalty"),
    (["--temperature", "0.5", "-n", "100000000000000000000"], "--num-samples"),
])
def test_sampling_values_that_overflow_or_exhaust_memory_are_usage_errors(cli, tmp_path, values, option):
    """They were 'unexpected RuntimeError: probability tensor contains either inf, nan' after loading,
    and for -n 10**20 a process that took all memory until the kernel killed it."""
    result = cli("generate", "hello", "-m", tmp_path / "not-loaded", *values)
    assert_one_line_error(result, 2, option)


@pytest.mark.parametrize("args, message", [
    (["generate", "hello", "-m", ""], "--model is empty"),  # ran the default model
    (["generate", "hello", "-m", " "], "--model is empty"),
    (["classify", "hello", "--labels", "a,b", "-m", ""], "--model is empty"),  # ran MiniLM
    (["generate", "hello", "-m", "tiny", "--adapter", ""], "--adapter is empty"),  # ran without the adapter
    (["generate", "--input", "", "-m", "tiny"], "--input is empty"),  # ": is a folder, not a file"
    (["translate", "--input", "", "--to", "de"], "--input is empty"),
    (["classify", "hello", "--labels-file", ""], "--labels-file is empty"),
])
def test_an_empty_name_is_named_not_taken_as_the_default_or_the_current_folder(cli, tiny_llama, args, message):
    args = [str(tiny_llama) if a == "tiny" else a for a in args]
    assert_one_line_error(cli(*args), 2, message)


def test_translate_input_file_keeps_its_trailing_blank_lines_as_stdin_does(cli, marian, tmp_path):
    """N lines in, N lines out: --input dropped the blank lines after the last text (1 line out for 3)."""
    lines = tmp_path / "lines.txt"
    lines.write_text("hello\n\n\n")
    from_file = cli("translate", "--input", lines, "--to", "de", "-m", marian)
    from_stdin = cli("translate", "--to", "de", "-m", marian, input="hello\n\n\n")
    assert from_file.exit_code == from_stdin.exit_code == 0, from_file.stderr
    assert from_file.stdout.count("\n") == from_stdin.stdout.count("\n") == 3
    records = cli("translate", "--input", lines, "--to", "de", "-m", marian, "--json")
    assert [json.loads(line)["id"] for line in records.stdout.splitlines()] == [1, 2, 3]


# ---------------------------------------------------------------- a resumed seeded run writes what one run would


def test_a_seeded_run_resumed_after_an_interruption_writes_what_one_run_writes(cli, tmp_path, tiny_llama):
    """One random stream was shared by the whole run, so the inputs left after an interruption drew
    from the start of the seed's stream: the resumed file mixed two different sets of samples."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\nc\nd\n")
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    args = ["generate", "--input", prompts, "-m", tiny_llama, "--max-new-tokens", "6", "--temperature", "1.5",
            "--seed", "1", "-n", "2"]
    assert cli(*args, "-o", whole).exit_code == 0
    done = whole.read_text().splitlines()
    resumed.write_text("\n".join(done[:3]) + "\n")  # as a run stopped after three records leaves it
    (tmp_path / "resumed.jsonl.gptcli.json").write_bytes((tmp_path / "whole.jsonl.gptcli.json").read_bytes())
    again = cli(*args, "-o", resumed)
    assert again.exit_code == 0 and "resuming: 3 results" in again.stderr, again.stderr
    assert resumed.read_text().splitlines() == done
    one_at_a_time = cli(*args, "--batch-size", "1", "--json")  # nor does the batch change a sample
    assert [json.loads(line)["text"] for line in one_at_a_time.stdout.splitlines()] == \
        [json.loads(line)["text"] for line in done]
