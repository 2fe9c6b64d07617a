"""`gptcli generate` through its real entry point: stdout, stderr and exit codes apart."""

from __future__ import annotations

import json
import re

import pytest


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_prompt_argument_prints_only_the_result(cli, tiny_llama):
    result = cli("generate", "the cat", "-m", tiny_llama, "--max-new-tokens", "5", "--dtype", "float32")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1
    assert "stopped at --max-new-tokens 5" in result.stderr  # never a silent limit


def test_json_result_fields(cli, tiny_llama):
    result = cli("generate", "the cat", "-m", tiny_llama, "--max-new-tokens", "4", "--json")
    record, = _json_lines(result.stdout)
    assert record["prompt"] == "the cat" and record["id"] == 1
    assert record["generated_tokens"] == 4 and record["finish_reason"] == "length"
    assert isinstance(record["text"], str) and record["prompt_tokens"] > 2


def test_stream_and_no_stream_print_the_same(cli, tiny_llama):
    args = ("generate", "hello world", "-m", tiny_llama, "--max-new-tokens", "8")
    assert cli(*args).stdout == cli(*args, "--no-stream").stdout


def test_stdin_dash_and_piped_stdin_are_the_prompt(cli, tiny_llama):
    args = ("-m", tiny_llama, "--max-new-tokens", "3", "--json")
    from_dash = _json_lines(cli("generate", "-", *args, input="the dog ran").stdout)[0]
    from_pipe = _json_lines(cli("generate", *args, input="the dog ran").stdout)[0]
    assert from_dash["prompt"] == from_pipe["prompt"] == "the dog ran"


def test_argument_with_piped_stdin_is_instruction_plus_context(cli, tiny_llama):
    result = cli("generate", "Summarize these notes", "-m", tiny_llama, "--max-new-tokens", "3", "--json",
                 input="notes: the cat sat\n")
    prompt = _json_lines(result.stdout)[0]["prompt"]
    assert prompt.startswith("Summarize these notes") and "notes: the cat sat" in prompt


def test_no_prompt_at_all_is_a_usage_error(cli, tiny_llama, monkeypatch):
    monkeypatch.setattr("gptcli.textio.stdin_is_piped", lambda: False)
    result = cli("generate", "-m", tiny_llama)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no prompt" in result.stderr


def test_batch_file_keeps_order_and_matches_single_runs(cli, tiny_llama, tmp_path):
    prompts = ["the cat sat", "a big red house by the river at night", "", "hello", "two three four five six"]
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n")
    common = ("-m", tiny_llama, "--max-new-tokens", "6", "--dtype", "float32")
    batch = _json_lines(cli("generate", "--input", tmp_path / "p.txt", "--batch-size", "2", "--json", *common).stdout)
    assert [r["prompt"] for r in batch] == [p for p in prompts if p]  # blank lines skipped, order kept
    assert [r["id"] for r in batch] == [1, 2, 4, 5]  # ids are line numbers
    singles = [cli("generate", p, "--no-stream", *common).stdout.rstrip("\n") for p in prompts if p]
    assert [r["text"] for r in batch] == singles


def test_jsonl_records_carry_fields_and_accept_messages(cli, tiny_llama, tmp_path):
    rows = [{"id": "a", "prompt": "the cat", "topic": "pets"},
            {"id": "b", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = _json_lines(cli("generate", "--input", path, "-m", tiny_llama, "--max-new-tokens", "3", "--json").stdout)
    assert [r["id"] for r in out] == ["a", "b"]
    assert out[0]["topic"] == "pets" and out[1]["messages"][0]["role"] == "system"


def test_output_file_resumes_and_drops_a_torn_line(cli, tiny_llama, tmp_path):
    (tmp_path / "p.txt").write_text("".join(f"prompt number {i}\n" for i in range(6)))
    out = tmp_path / "out.jsonl"
    args = ("generate", "--input", tmp_path / "p.txt", "-o", out, "-m", tiny_llama, "--max-new-tokens", "4")
    first = cli(*args)
    assert first.exit_code == 0 and first.stdout == ""
    complete = out.read_text().splitlines()
    # Simulate a crash: two records kept, the third torn in the middle of its line.
    out.write_text("\n".join(complete[:2]) + "\n" + complete[2][:15])
    second = cli(*args)
    assert second.exit_code == 0
    assert "torn" in second.stderr and "resuming: 2" in second.stderr
    assert out.read_text().splitlines() == complete  # same records, same order, no duplicate
    third = cli(*args)
    assert "nothing to do" in third.stderr and out.read_text().splitlines() == complete


def test_num_samples_writes_one_record_per_sample(cli, tiny_llama):
    result = cli("generate", "the cat", "-m", tiny_llama, "-n", "3", "--temperature", "1", "--seed", "1",
                 "--max-new-tokens", "5", "--json")
    assert [r["sample"] for r in _json_lines(result.stdout)] == [0, 1, 2]


def test_same_seed_same_output_through_the_cli(cli, tiny_llama):
    args = ("generate", "the cat", "-m", tiny_llama, "--temperature", "0.9", "--top-p", "0.9", "--top-k", "50",
            "--min-p", "0.01", "--max-new-tokens", "8")
    assert cli(*args, "--seed", "5").stdout == cli(*args, "--seed", "5").stdout


def test_stop_option_understands_escapes(cli, eos_gpt2, tiny_llama):
    free = cli("generate", "the cat", "-m", tiny_llama, "--max-new-tokens", "12", "--json").stdout
    text = _json_lines(free)[0]["text"]
    stop = text[3:5]
    result = _json_lines(cli("generate", "the cat", "-m", tiny_llama, "--max-new-tokens", "12", "--json",
                             "--stop", stop).stdout)[0]
    assert result["finish_reason"] == "stop" and result["text"] == text[: text.index(stop)]


def test_long_prompt_errors_with_numbers_and_truncate_fixes_it(cli, tiny_llama):
    long_prompt = "the cat sat on the mat " * 60
    error = cli("generate", long_prompt, "-m", tiny_llama)
    assert error.exit_code == 2 and "context of 128" in error.stderr and "--truncate" in error.stderr
    fixed = cli("generate", long_prompt, "-m", tiny_llama, "--truncate", "left", "--max-new-tokens", "4", "--json")
    assert fixed.exit_code == 0 and "cut from" in fixed.stderr
    assert _json_lines(fixed.stdout)[0]["prompt_tokens"] <= 124


def test_system_prompt_and_raw_change_the_model_input(cli, tiny_llama):
    base = ("generate", "hello", "-m", tiny_llama, "--max-new-tokens", "2", "--json")
    tokens = [_json_lines(cli(*base, *extra).stdout)[0]["prompt_tokens"]
              for extra in ((), ("--system", "You are terse."), ("--raw",))]
    assert tokens[1] > tokens[0] > tokens[2]  # template adds tokens; a system turn adds more


@pytest.mark.parametrize("args,needle", [
    (("--temperature", "-1"), "--temperature"),
    (("--top-p", "0"), "--top-p"),
    (("--top-p", "1.5"), "--top-p"),
    (("--max-new-tokens", "0"), "--max-new-tokens"),
    (("-n", "2"), "--temperature above 0"),
    (("--top-k", "-3"), "--top-k"),
    (("--repetition-penalty", "0"), "--repetition-penalty"),
    (("--dtype", "float8"), "--dtype"),
    (("--device", "cuda:64"), "CUDA"),  # no machine has GPU 64: an error with or without CUDA
    (("--no-such-option",), "No such option"),
    (("--truncate", "middle"), "--truncate"),
])
def test_bad_options_are_one_line_usage_errors(cli, tiny_llama, args, needle):
    result = cli("generate", "hi", "-m", tiny_llama, *args)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and needle in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("content,needle", [
    ('{"prompt": "ok"}\n{"prompt": \n', "in.jsonl:2: not valid JSON"),
    ('["a list"]\n', "in.jsonl:1: expected a JSON object"),
    ('{"text": "wrong field"}\n', "in.jsonl:1: missing field 'prompt'"),
    ('{"prompt": 5}\n', "field 'prompt' must be a string"),
    ('{"prompt": "  "}\n', "field 'prompt' is empty"),
    ('{"messages": [{"role": "wizard", "content": "x"}]}\n', "in.jsonl:1: messages[1] has role 'wizard'"),
    ('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n', "id 1 repeats"),
    ("\n\n\n", "no records"),
])
def test_bad_records_name_file_and_line(cli, tiny_llama, tmp_path, content, needle):
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    result = cli("generate", "--input", path, "-m", tiny_llama)
    assert result.exit_code == 2 and needle in result.stderr and result.stderr.count("\n") == 1


def test_output_into_missing_folder_or_onto_input_is_refused(cli, tiny_llama, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("hello\n")
    missing = cli("generate", "--input", path, "-o", tmp_path / "nope" / "o.jsonl", "-m", tiny_llama)
    onto_input = cli("generate", "--input", path, "-o", path, "-m", tiny_llama)
    assert missing.exit_code == onto_input.exit_code == 2
    assert "does not exist" in missing.stderr and "is the input file" in onto_input.stderr
    assert path.read_text() == "hello\n"


def test_stats_go_to_stderr(cli, tiny_llama):
    result = cli("generate", "hello", "-m", tiny_llama, "--max-new-tokens", "3", "--stats", "--dtype", "float32",
                 "--device", "cpu")
    assert result.exit_code == 0
    assert "tok/s" in result.stderr and "first token" in result.stderr and "peak RSS" in result.stderr
    assert "cpu/float32" in result.stderr and "tok/s" not in result.stdout


def test_verbose_tells_device_and_dtype_with_reason(cli, tiny_llama):
    result = cli("-v", "generate", "hello", "-m", tiny_llama, "--max-new-tokens", "2")
    assert re.search(r"device (cpu|cuda|mps) \(", result.stderr) and "dtype" in result.stderr
