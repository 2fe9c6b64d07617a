"""finetune reads its data as strictly as --input, renders through the one chat renderer, and keeps
stderr to one line per event, with --num-processes too (issue 11).

JSON that cannot be right is an input error naming file and line at read time; running out of memory
while reading is a runtime failure; chat templates have the renderer's limits; third-party progress
bars stay off stderr unless -v; a launch prints one line for a failure and one for a stop.
Real subprocesses for the memory limit, the progress bars and the launcher.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from gptcli.finetune import data
from tests.conftest import gptcli_command
from tests.finetune.conftest import chat_rows, write_jsonl
from tests.finetune.test_safety import LONG_RUN, QUICK, start_hangable, wait_for_steps

NO_MODEL = "/nonexistent/model-folder"  # reading must fail first, before this is ever looked at
GOOD = '{"text": "the cat sat."}'


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptcli: error: "), stderr
    return lines[0]


# 1. JSON that parses but cannot be right: the same checks as textio's reader, naming file and line

@pytest.mark.parametrize("name, text, line, problem", [
    ("d.jsonl", GOOD + '\n{"text": "a \\ud800 b"}\n', 2, "\\ud800, half of a UTF-16 surrogate pair"),
    # through `datasets`, the lone surrogate was dropped without a word ("a \ud800 b" became "a  b")
    ("d.json", '[\n' + GOOD + ',\n{"text": "a \\ud800 b"}\n]', 3, "\\ud800, half of a UTF-16 surrogate pair"),
    ("d.jsonl", GOOD + '\n{"text": ' + "[" * 100_000 + "]" * 100_000 + '}\n', 2, "nested more than 100 levels"),
    ("d.jsonl", '{"text": "hi", "weight": NaN}\n', 1, "NaN is not a number JSON allows"),
    ("d.json", '[{"text": "hi", "weight": Infinity}]', 1, "Infinity is not a number JSON allows"),
    ("d.jsonl", GOOD + '\n{"text": "hi", "n": 1' + "0" * 5000 + '}\n', 2, "an integer of 5001 digits"),
    ("d.jsonl", '{"text": "one", "text": "two"}\n', 1, "the key 'text' appears twice"),
])
def test_json_that_cannot_be_right_is_an_input_error_naming_file_and_line(cli, tmp_path, name, text, line,
                                                                            problem):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    result = cli("finetune", "--data", path, "--model", NO_MODEL, "--output", tmp_path / "out")
    assert result.exit_code == 2, result.stderr
    message = one_error_line(result.stderr)
    assert f"{path}:{line}: " in message and problem in message
    assert not (tmp_path / "out").exists()


def test_a_line_separator_inside_a_jsonl_string_is_text_not_a_line_break(tmp_path):
    rows = [{"text": "one\u2028two\x85three"}, {"text": "four"}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    loaded = data.load_rows(str(path))
    assert [row.fields["text"] for row in loaded] == ["one\u2028two\x85three", "four"]
    assert loaded[1].where == f"{path}:2"


# Runs gptcli after `datasets` is imported, under an address-space limit a little above what the
# process holds then: a real allocation failure while the table is read.
_LIMITED = """
import re, resource, sys
import datasets, pandas, pyarrow  # noqa: F401
held = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (held + 100 * 2**20, resource.RLIM_INFINITY))
from gptcli.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_running_out_of_memory_while_reading_the_data_is_a_runtime_failure(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "big.parquet"  # small on disk, 3 million rows in memory
    pq.write_table(pa.table({"text": pa.array(["the cat sat on the mat and looked at the dog"] * 3_000_000)}), path)
    env = dict(os.environ, MALLOC_ARENA_MAX="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", _LIMITED, "finetune", "--data", str(path), "--model", NO_MODEL,
                             "-o", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1, result.stderr
    message = one_error_line(result.stderr)
    assert f"out of memory while reading {path}" in message and "split the file" in message


# 2. chat templates render through the one renderer, with its limits

def _with_template(base, folder, template: str):
    shutil.copytree(base, folder)
    (folder / "chat_template.jinja").write_text(template)
    return folder


@pytest.mark.parametrize("template, says", [
    ("{% macro again(n) %}{{ again(n + 1) }}{% endmacro %}{{ again(0) }}", "recurses without end"),
    ("{{ 'x' * 3000000 }}{% for m in messages %}{{ m['content'] }}{% endfor %}", "far more than its messages hold"),
])
def test_a_chat_template_that_recurses_or_floods_is_bad_input_naming_the_file(cli, tiny_llama, tmp_path, template,
                                                                               says):
    folder = _with_template(tiny_llama, tmp_path / "model", template)
    rows = write_jsonl(tmp_path / "chat.jsonl", chat_rows(4))
    result = cli("finetune", "--data", rows, "--model", folder, "-o", tmp_path / "out", "--inspect")
    assert result.exit_code == 2, result.stderr
    message = one_error_line(result.stderr)
    assert says in message and str(folder / "chat_template.jinja") in message


# 3. stderr: third-party progress bars only with -v; one line per event from a launch

_BARS = """
import sys
from gptcli import quiet
quiet.configure(verbose=sys.argv[1] == "verbose")
import datasets
datasets.load_dataset("json", data_files=sys.argv[2], split="train", cache_dir=sys.argv[3])
from transformers import GPT2Config, GPT2LMHeadModel
GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=50)).save_pretrained(sys.argv[3] + "/model")
"""


def _bars(tmp_path, how: str) -> list[bool]:
    rows = write_jsonl(tmp_path / f"{how}.jsonl", [{"text": "the cat sat."}] * 3)
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")}
    result = subprocess.run([sys.executable, "-c", _BARS, how, str(rows), str(tmp_path / how)], env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    return ["Generating train split" in result.stderr, "Writing model shards" in result.stderr]


def test_third_party_progress_bars_only_with_verbose(tmp_path):
    assert _bars(tmp_path, "quiet") == [False, False]
    assert _bars(tmp_path, "verbose") == [True, True]  # -v lets them through, as it does warnings


def test_a_launch_whose_processes_fail_prints_one_line(tiny_llama, chat_file, tmp_path):
    args = ["finetune", "--data", chat_file, "--model", tiny_llama, "-o", tmp_path / "out", "--num-processes", "2",
            "--device", "cpu", *QUICK, "--max-steps", "6", "--learning-rate", "1e30"]
    result = subprocess.run([*gptcli_command(), *map(str, args)], env=dict(os.environ, OMP_NUM_THREADS="1"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("gptcli: error: ")]
    assert len(errors) == 1 and errors[0].startswith("gptcli: error: training diverged: "), result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in result.stderr and "ChildFailedError" not in result.stderr
    assert not re.search(r"^[WEI]\d{4} ", result.stderr, re.MULTILINE), result.stderr  # torchrun's log lines


def test_sigterm_to_a_launch_prints_one_stop_line(tiny_llama, chat_file, tmp_path):
    out = tmp_path / "ddp"
    parent = start_hangable(("--data", chat_file, "--model", tiny_llama, "--num-processes", "2", "--device", "cpu",
                             *LONG_RUN), out)
    wait_for_steps(out, parent, 2)
    parent.send_signal(signal.SIGTERM)
    stderr = parent.communicate(timeout=120)[1]
    assert parent.returncode == 128 + signal.SIGTERM, stderr
    assert stderr.count("stopped by SIGTERM") == 1 and "checkpoint saved at step" in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("gptcli: stopped by SIGTERM"), stderr
