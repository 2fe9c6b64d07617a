"""`gptcli generate --server URL`: the command's work done by a real `gptcli serve`, with the
same results, records, resume and errors as a local run, and without importing torch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.server import running_server

# Blocks torch and transformers in the client process: importing either (or any part) raises ImportError.
NO_TORCH = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked: the --server client must not import it")
sys.meta_path.insert(0, Blocked())
from gptcli.__main__ import run
sys.argv[0] = "gptcli"
run()
"""


@pytest.fixture(scope="module")
def server(tiny_llama, session_dir):
    with running_server(["--model", tiny_llama, "--dtype", "float32"], session_dir) as process:
        yield process


def _client(*args, stdin: str = "", env=None) -> subprocess.CompletedProcess:
    """gptcli in a process of its own that cannot import torch or transformers."""
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=120, env=env)


def _local(cli, tiny_llama, *args):
    result = cli("generate", "-m", tiny_llama, "--dtype", "float32", *args)
    assert result.exit_code == 0, result.stderr
    return result


def test_a_prompt_through_the_server_is_what_a_local_run_writes(server, cli, tiny_llama):
    local = _local(cli, tiny_llama, "the cat sat on the mat", "--max-new-tokens", "12", "--json")
    remote = _client("generate", "--server", server.url, "the cat sat on the mat", "--max-new-tokens", "12",
                     "--json")
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    streamed = _client("generate", "--server", server.url, "the cat sat on the mat", "--max-new-tokens", "12")
    assert streamed.returncode == 0 and streamed.stdout == local_text(cli, tiny_llama)


def local_text(cli, tiny_llama) -> str:
    return _local(cli, tiny_llama, "the cat sat on the mat", "--max-new-tokens", "12").stdout


def test_a_batch_through_the_server_keeps_order_records_and_resume(server, cli, tiny_llama, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    rows = [{"id": f"r{i}", "prompt": p} for i, p in enumerate(["a", "hello world", "two red houses", "rain",
                                                                 "the sea at night", "one two three"])]
    rows.append({"id": "chat", "messages": [{"role": "system", "content": "be brief"},
                                            {"role": "user", "content": "the dog ran"}]})
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    options = ["--input", prompts, "--max-new-tokens", "9", "--temperature", "0.8", "--seed", "4", "-n", "2"]
    local_out, remote_out = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    _local(cli, tiny_llama, *options, "--output", local_out)
    done = _client("generate", "--server", server.url, *options, "--output", remote_out)
    assert done.returncode == 0, done.stderr
    expected = local_out.read_text(encoding="utf-8")
    assert remote_out.read_text(encoding="utf-8") == expected  # the same samples, in input order
    # Cut short as if interrupted: the rerun asks the server for the rest only, and appends them.
    remote_out.write_text("".join(expected.splitlines(keepends=True)[:5]), encoding="utf-8")
    resumed = _client("generate", "--server", server.url, *options, "--output", remote_out)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming: 5 results" in resumed.stderr
    assert remote_out.read_text(encoding="utf-8") == expected


def test_errors_through_the_server_are_the_local_ones(server, cli, tiny_llama):
    long_prompt = " ".join(["word"] * 400)  # past the tiny model's context of 128 tokens
    local = cli("generate", "-m", tiny_llama, "--dtype", "float32", long_prompt)
    remote = _client("generate", "--server", server.url, long_prompt)
    assert local.exit_code == remote.returncode == 2
    assert remote.stderr.strip().splitlines()[-1] == local.stderr.strip().splitlines()[-1]
    wrong_model = _client("generate", "--server", server.url, "--model", "another-model", "hi")
    assert wrong_model.returncode == 2 and "not served here" in wrong_model.stderr
    loading = _client("generate", "--server", server.url, "--dtype", "bfloat16", "hi")
    assert loading.returncode == 2 and "gptcli serve" in loading.stderr


def test_a_server_that_is_down_is_one_line_naming_it(unused_port):
    url = f"http://127.0.0.1:{unused_port}"
    result = _client("generate", "--server", url, "hello")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and url in result.stderr and "gptcli serve" in result.stderr


def test_the_server_url_can_come_from_the_environment(server, cli, tiny_llama, subprocess_env):
    env = dict(subprocess_env, GPTCLI_SERVER=server.url)
    remote = _client("generate", "hello world", "--max-new-tokens", "6", env=env)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == _local(cli, tiny_llama, "hello world", "--max-new-tokens", "6").stdout


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as probe:  # bound then closed: nothing listens there during the test
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_images_for_a_text_only_served_model_are_exit_2_before_any_request(server, tmp_path):
    from tests.tiny_vision import picture

    result = _client("generate", "--server", server.url, "what is it", "--image", picture(tmp_path / "a.png", (9, 9, 9)))
    assert result.returncode == 2 and result.stdout == ""
    assert "reads text only" in result.stderr and "image-text-to-text" in result.stderr
