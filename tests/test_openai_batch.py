"""OpenAI Batch files in and out of `gptcli generate`: the lines vLLM's run-batch and OpenAI's
Batch API read, with each line's own settings, gptcli's order and resume, and bad lines
refused before any model loads."""

from __future__ import annotations

import json

import pytest

CHAT = "/v1/chat/completions"


def _line(custom_id, url=CHAT, **body):
    if url == CHAT and "messages" not in body:
        body["messages"] = [{"role": "user", "content": f"tell me about {custom_id}"}]
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _write(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _generate(cli, tiny_llama, *args):
    result = cli("generate", "-m", tiny_llama, "--dtype", "float32", *args)
    assert result.exit_code == 0, result.stderr
    return result


def test_batch_lines_run_with_their_own_settings_and_come_back_as_openai_results(cli, tiny_llama, tmp_path):
    batch = _write(tmp_path / "batch.jsonl", [
        _line("first", max_tokens=5, model="any-name"),
        _line("plain", url="/v1/completions", prompt="hello world", max_tokens=7),
        _line("sampled", max_tokens=6, temperature=0.9, seed=3, n=3, stop=["zzz"]),
    ])
    lines = [json.loads(x) for x in _generate(cli, tiny_llama, "--input", batch, "--output-format",
                                               "openai-batch").stdout.splitlines()]
    assert [line["custom_id"] for line in lines] == ["first", "plain", "sampled"]
    assert all(line["error"] is None and line["response"]["status_code"] == 200 for line in lines)
    chat, plain, sampled = (line["response"]["body"] for line in lines)
    assert chat["object"] == "chat.completion" and plain["object"] == "text_completion"
    # Each line is what `gptcli generate` gives that prompt with the same settings.
    alone = json.loads(_generate(cli, tiny_llama, "tell me about first", "--max-new-tokens", "5", "--json").stdout)
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": alone["text"]}
    assert chat["choices"][0]["finish_reason"] == ("length" if alone["finish_reason"] == "length" else "stop")
    assert chat["usage"] == {"prompt_tokens": alone["prompt_tokens"], "completion_tokens": alone["generated_tokens"],
                             "total_tokens": alone["prompt_tokens"] + alone["generated_tokens"]}
    raw = json.loads(_generate(cli, tiny_llama, "hello world", "--raw", "--max-new-tokens", "7", "--json").stdout)
    assert plain["choices"][0]["text"] == raw["text"]
    assert [c["index"] for c in sampled["choices"]] == [0, 1, 2]  # n=3 from the line's body
    assert len({c["message"]["content"] for c in sampled["choices"]}) > 1
    assert sampled["usage"]["completion_tokens"] <= 18


def test_a_batch_output_file_resumes_by_custom_id(cli, tiny_llama, tmp_path):
    batch = _write(tmp_path / "batch.jsonl", [_line(f"q{i}", max_tokens=4 + i, temperature=0.7, seed=i)
                                              for i in range(5)])
    out = tmp_path / "results.jsonl"
    _generate(cli, tiny_llama, "--input", batch, "--output-format", "openai-batch", "--output", out)
    whole = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(whole[:2]), encoding="utf-8")  # as if stopped after two lines
    resumed = _generate(cli, tiny_llama, "--input", batch, "--output-format", "openai-batch", "--output", out)
    assert "resuming: 2 results" in resumed.stderr

    def stable(lines):  # everything but the creation time
        parsed = [json.loads(line) for line in lines]
        for line in parsed:
            del line["response"]["body"]["created"]
        return parsed

    assert stable(out.read_text(encoding="utf-8").splitlines()) == stable(whole)


@pytest.mark.parametrize("line,message", [
    ({"method": "POST", "url": CHAT, "body": {"messages": []}}, "custom_id"),
    (_line("x", url="/v1/embeddings"), "field 'url' must be"),
    (_line("x", tools=[{"type": "function"}]), "body.tools is not supported"),
    (_line("x", temperature=-1), "body settings: temperature must be 0"),
    (_line("x", presence_penalty=3), "body settings: presence_penalty must be between -2 and 2"),
    (_line("x", n=2), "body.n above 1 needs a temperature"),
    (_line("x", messages=[{"role": "robot", "content": "hi"}]), "body.messages[0].role"),
    (_line("x", stop=["a", "b", "c", "d", "e"]), "body.stop"),
])
def test_a_bad_batch_line_is_refused_naming_its_line_before_loading(cli, tmp_path, line, message):
    batch = _write(tmp_path / "batch.jsonl", [_line("fine"), line])
    result = cli("generate", "-m", str(tmp_path / "no-such-model"), "--input", batch)
    assert result.exit_code == 2
    assert f"batch.jsonl:2: " in result.stderr and message in result.stderr  # the input, not the missing model


def test_repeated_custom_ids_and_batch_output_without_batch_input_are_refused(cli, tmp_path):
    batch = _write(tmp_path / "batch.jsonl", [_line("same"), _line("same")])
    result = cli("generate", "-m", str(tmp_path / "none"), "--input", batch)
    assert result.exit_code == 2 and "batch.jsonl:2: custom_id 'same' repeats" in result.stderr
    plain = _write(tmp_path / "plain.jsonl", [{"prompt": "hi"}])
    result = cli("generate", "-m", str(tmp_path / "none"), "--input", plain, "--output-format", "openai-batch")
    assert result.exit_code == 2 and "needs an OpenAI Batch --input" in result.stderr
