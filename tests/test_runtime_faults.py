"""Runtime limits and environment faults: each ends in one line that names the cause and the fix.

An encoder-decoder's decoder positions, a chat template that never ends, a cache that cannot
be written, stdout on a full disk, and running out of memory (a real RLIMIT_AS in a child).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import tiny_models
from tests.conftest import gptcli_command
from tests.tasks import tiny_seq2seq

SENTENCE = "the cat sat on the mat and ran to the big red house."


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.startswith("gptcli: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr and "unexpected" not in stderr, stderr
    return lines[0]


# ------------------------------------------------------------ an encoder-decoder's decoder positions

@pytest.fixture(scope="module")
def tiny_bart(session_dir):
    """A BART whose decoder has 64 positions (learned: one more is an IndexError)."""
    folder = session_dir / "faults-bart"
    return folder if (folder / "config.json").is_file() else tiny_seq2seq.build_bart(folder)


@pytest.fixture(scope="module")
def tiny_marian(session_dir):
    folder = session_dir / "faults-marian"
    return folder if (folder / "config.json").is_file() else tiny_seq2seq.build_marian(folder)


def test_a_summary_budget_past_the_decoder_is_capped_and_says_length(cli, tiny_bart):
    result = cli("summarize", SENTENCE, "-m", tiny_bart, "--length", "long", "--json")  # 250 tokens asked
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    # Random weights write on to the cap: 64 tokens, not 250, and the result says it was cut there.
    assert record["generated_tokens"] == 64 and record["finish_reason"] == "length"
    assert "stopped at its limit of 64 tokens" in result.stderr and "decoder" in result.stderr


@pytest.mark.parametrize("command", ["summarize", "translate"])
def test_max_new_tokens_past_the_decoder_is_a_usage_error(cli, tiny_bart, tiny_marian, command):
    model = tiny_bart if command == "summarize" else tiny_marian
    result = cli(command, SENTENCE, "-m", model, "--to", "de", "--max-new-tokens", "200") if command == "translate" \
        else cli(command, SENTENCE, "-m", model, "--max-new-tokens", "200")
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert "--max-new-tokens 200" in line and "64 positions" in line and "--max-new-tokens 64" in line


def test_a_long_line_is_translated_in_segments_that_fit_the_decoder(cli, tiny_marian):
    line = " ".join([SENTENCE] * 5)  # ~70 tokens: twice that would overflow 64 decoder positions at once
    result = cli("translate", line, "-m", tiny_marian, "--to", "de", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["segments"] >= 3
    assert len(result.stdout.strip().splitlines()) == 1


# ------------------------------------------------------------ chat templates that never end

def _with_template(base: Path, folder: Path, template: str, where: str) -> Path:
    shutil.copytree(base, folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    if where == "jinja":
        (folder / "chat_template.jinja").write_text(template)
    else:
        config["chat_template"] = template
    config_path.write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("template,where,says", [
    ("{% macro again(n) %}{{ again(n + 1) }}{% endmacro %}{{ again(0) }}", "jinja", "recurses"),
    ("{{ 'x' * 3000000 }}{% for m in messages %}{{ m['content'] }}{% endfor %}", "config", "characters"),
])
def test_a_template_that_recurses_or_floods_is_bad_input_naming_the_file(cli, tiny_llama, tmp_path, template,
                                                                          where, says):
    folder = _with_template(tiny_llama, tmp_path / "model", template, where)
    result = cli("generate", "hello", "-m", folder, "--max-new-tokens", "2")
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    named = "chat_template.jinja" if where == "jinja" else "tokenizer_config.json"
    assert says in line and str(folder / named) in line and "chat template" in line


def test_a_template_that_loops_for_ever_stops_at_the_time_limit(tiny_llama, tmp_path):
    loop = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    folder = _with_template(tiny_llama, tmp_path / "model", loop, "jinja")
    result = subprocess.run(gptcli_command() + ["generate", "hello", "-m", str(folder), "--max-new-tokens", "2"],
                            capture_output=True, text=True, timeout=90)
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert "ran for more than 5 s" in line and str(folder / "chat_template.jinja") in line


def test_a_slow_template_stops_in_any_thread_and_normal_renders_are_unaffected(tiny_llama):
    import threading

    from transformers import AutoTokenizer

    from gptcli.errors import InputError
    from gptcli.services.prompting import render_chat

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    messages = [{"role": "user", "content": "hi"}]
    good = render_chat(tokenizer, messages)
    assert good == tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    tokenizer.chat_template = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    errors = []

    def worker():
        try:
            render_chat(tokenizer, messages, "prompt 3", seconds=0.5)
        except InputError as exc:
            errors.append(exc.message)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive() and errors and "more than 0.5 s on prompt 3" in errors[0]


# ------------------------------------------------------------ the cache and stdout

@pytest.mark.parametrize("layout", ["file", "under-a-file"])
def test_a_cache_that_is_a_file_names_it(cli, default_model_available, tmp_path, monkeypatch, layout):
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    cache = blocker if layout == "file" else blocker / "gptcli"
    monkeypatch.setenv("GPTCLI_CACHE", str(cache))
    result = cli("generate", "hi", "--max-new-tokens", "1")  # the default model converts into the cache
    assert result.exit_code == 1
    line = _one_line(result.stderr)
    assert f"GPTCLI_CACHE={cache}" in line and f"{blocker} is a file" in line and "set GPTCLI_CACHE" in line
    assert blocker.read_text() == "not a folder"


def _without_root_overrides() -> None:
    """preexec_fn: a root child loses the capabilities that ignore file permissions (a chmod is then real)."""
    if os.geteuid() != 0:
        return  # an ordinary user is bound by permissions already
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone from the child after exec
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_cache_names_the_path_and_the_fix(default_model_available, tmp_path):
    cache = tmp_path / "read-only-cache"
    cache.mkdir()
    cache.chmod(0o555)
    env = dict(os.environ, GPTCLI_CACHE=str(cache))
    result = subprocess.run(gptcli_command() + ["generate", "hi", "--max-new-tokens", "1"], env=env,
                            capture_output=True, text=True, timeout=120, preexec_fn=_without_root_overrides)
    cache.chmod(0o755)
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert f"GPTCLI_CACHE={cache}" in line and "Permission denied" in line and "writable" in line
    assert list(cache.iterdir()) == []


def test_stdout_on_a_full_disk_names_it(tiny_llama):
    with open("/dev/full", "w") as full:
        result = subprocess.run(gptcli_command() + ["generate", "hi", "-m", str(tiny_llama), "--max-new-tokens", "2"],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert "stdout" in line and "/dev/full" in line and "No space left on device" in line


def test_stderr_on_a_full_disk_does_not_fail_a_run_whose_results_are_written(tiny_llama):
    with open("/dev/full", "w") as full:  # the closing length warning cannot be written
        result = subprocess.run(gptcli_command() + ["generate", "hi", "-m", str(tiny_llama), "--max-new-tokens", "2",
                                                    "--json"], stdout=subprocess.PIPE, stderr=full, text=True,
                                timeout=120)
    assert result.returncode == 0
    assert json.loads(result.stdout)["finish_reason"] == "length"


# ------------------------------------------------------------ out of memory: exit 1 with a hint

# Runs gptcli after the model stack is imported, under an address-space limit a little above
# what the process holds then: a real allocation failure, in loading or in running.
_LIMITED = """
import re, resource, sys
import torch, transformers, transformers.modeling_utils, safetensors.torch  # noqa: F401
held = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (held + int(sys.argv[1]) * 2**20, resource.RLIM_INFINITY))
from gptcli.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def _run_limited(args: list, debug: bool = False, headroom_mib: int = 1024) -> subprocess.CompletedProcess:
    env = dict(os.environ, MALLOC_ARENA_MAX="1", OMP_NUM_THREADS="1")
    if debug:
        env["GPTCLI_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-c", _LIMITED, str(headroom_mib)] + [str(a) for a in args], env=env,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def huge_vocab_llama(session_dir):
    """A tiny model folder whose config asks for a 16M-token vocabulary: ~8 GB of embeddings to allocate."""
    from safetensors.torch import load_file, save_file

    folder = session_dir / "faults-huge-vocab"
    if (folder / "config.json").is_file():
        return folder
    tiny_models.build_llama(folder)
    weights = load_file(str(folder / "model.safetensors"))
    # Only the layers keep their weights; the embeddings and head are created at their new size.
    save_file({k: v for k, v in weights.items() if "embed" not in k and "lm_head" not in k},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 16_000_000
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def long_context_llama(session_dir):
    folder = session_dir / "faults-long-context"
    return folder if (folder / "config.json").is_file() else tiny_models.build_llama(folder, context=200_000_000)


def test_a_model_too_big_for_memory_is_a_runtime_failure_with_a_hint(huge_vocab_llama):
    result = _run_limited(["generate", "hi", "-m", huge_vocab_llama, "--max-new-tokens", "1"])
    assert result.returncode == 1, result.stderr
    line = _one_line(result.stderr)
    assert "out of memory while loading the weights" in line and "--dtype" in line


def test_running_out_of_memory_mid_run_is_exit_1_and_debug_shows_the_cause(long_context_llama):
    args = ["generate", "hi", "-m", long_context_llama, "--max-new-tokens", "100000000", "--batch-size", "1"]
    result = _run_limited(args)
    assert result.returncode == 1, result.stderr
    line = _one_line(result.stderr)
    assert "out of memory" in line and "--batch-size" in line and "--dtype" in line
    debug = _run_limited(args, debug=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "allocate" in debug.stderr


# ------------------------------------------------------------ misleading messages

def test_the_closing_warning_names_the_budget_actually_used(cli, tiny_llama):
    prompt = " ".join(["the cat sat on the mat"] * 8)  # ~105 tokens of a 128-token context
    result = cli("generate", prompt, "-m", tiny_llama, "--max-new-tokens", "100", "--json")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    room = 128 - record["prompt_tokens"]
    assert f"only {room} new tokens fit" in result.stderr and record["finish_reason"] == "length"
    closing = result.stderr.strip().splitlines()[-1]
    assert f"limit: {room} new tokens, all that fit in the context" in closing
    assert "at --max-new-tokens 100" not in closing



# ------------------------------------------------------------ names the file system cannot hold

@pytest.mark.parametrize("option", ["--model", "--adapter"])
def test_a_name_too_long_for_the_file_system_is_bad_input(cli, tiny_llama, option):
    args = ["-m", "x" * 5000] if option == "--model" else ["-m", tiny_llama, "--adapter", "y" * 5000]
    result = cli("generate", "hi", *args, "--max-new-tokens", "1")
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert line.startswith(f"gptcli: error: {option} ") and "File name too long" in line and len(line) < 300


def test_classify_on_a_causal_lm_renders_through_the_same_limits(cli, tiny_llama, tmp_path):
    folder = _with_template(tiny_llama, tmp_path / "model", "{% macro again(n) %}{{ again(n + 1) }}{% endmacro %}"
                                                            "{{ again(0) }}", "jinja")
    result = cli("classify", "hello", "--labels", "yes,no", "-m", folder)
    assert result.exit_code == 2
    assert "recurses" in _one_line(result.stderr)
