"""finetune never half-writes or mixes an output, and refuses values that cannot be right (issue 11).

Bad values are refused before any model loads; a diverged loss stops the run; the final save is
atomic; one run per output folder; a run killed early can start again; SIGTERM checkpoints.
Real subprocesses for the signals, the second process and the full disk.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from tests.conftest import gptcli_command, interruptible
from tests.finetune.conftest import metrics
from tests.finetune.test_resume import start, step_losses, wait_for

QUICK = ("--batch-size", "4", "--max-length", "48")
LONG_RUN = (*QUICK, "--max-steps", "400", "--save-every", "1000", "--eval-fraction", "0", "--lr", "1e-3")


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptcli: error: "), result.stderr
    return lines[0]


def strict_json(line: str):
    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def wait_for_steps(out, process, count: int) -> None:
    wait_for(out / "metrics.jsonl", process)
    while len(step_losses(out)) < count:
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.01)


# 1. --config values of the wrong type

@pytest.mark.parametrize("line, setting", [
    ("batch_size: four", "batch_size"), ('max_steps: "2"', "max_steps"), ("data: [a, b]", "data"),
    ('merge: "false"', "merge"), ("packing: 1", "packing"), ("learning_rate: '1e-4'", "learning_rate"),
    ("epochs: true", "epochs"), ("max_steps: 2.5", "max_steps"), ("model: {name: x}", "model"),
    ("eval_fraction: ten", "eval_fraction"), ("output: 5", "output"),
])
def test_config_values_of_the_wrong_type_are_refused(cli, completion_file, tmp_path, line, setting):
    config = tmp_path / "train.yaml"
    config.write_text(line + "\n")
    result = cli("finetune", "--config", config, "--data", completion_file, "-o", tmp_path / "out",
                 "--model", tmp_path / "no-model")
    assert result.exit_code == 2, result.stderr
    error = one_error_line(result)
    assert str(config) in error and f"{setting} must be" in error
    assert not (tmp_path / "out").exists()


def test_config_numbers_in_exponent_form_are_numbers(completion_file, tmp_path):
    from gptcli.finetune.config import resolve_config

    config = tmp_path / "train.yaml"
    config.write_text(f"data: {completion_file}\nlearning_rate: 1e-4\nweight_decay: 1.5E-2\n")
    resolved = resolve_config({}, str(config))
    assert resolved.learning_rate == 1e-4 and resolved.weight_decay == 0.015


# 2. values that cannot be right, typed on the command line (Typer reads "nan" as a float)

@pytest.mark.parametrize("option, value", [
    ("--learning-rate", "nan"), ("--lr", "inf"), ("--epochs", "nan"), ("--epochs", "inf"),
    ("--weight-decay", "inf"), ("--warmup", "nan"), ("--lora-dropout", "nan"), ("--eval-fraction", "nan"),
    ("--warmup", "-5"), ("--eval-every", "-1"), ("--save-every", "-2"), ("--log-every", "-1"),
    ("--weight-decay", "-1"), ("--early-stopping-patience", "-1"), ("--max-steps", "-1"),
    ("--lora-alpha", "0"), ("--seed", "-1"), ("--seed", str(2**32)),
])
def test_values_that_cannot_be_right_name_the_option(cli, completion_file, tmp_path, option, value):
    result = cli("finetune", "--data", completion_file, "-o", tmp_path / "out", "--model", tmp_path / "no-model",
                 option, value)
    assert result.exit_code == 2, result.stderr
    flag = "--learning-rate" if option == "--lr" else option
    assert f"{flag} must be" in one_error_line(result)
    assert not (tmp_path / "out").exists()


def test_verbose_after_the_command_is_not_a_training_setting(cli, completion_file, tmp_path):
    result = cli("finetune", "--data", completion_file, "-o", tmp_path / "out", "--lr", "nan", "-v")
    assert result.exit_code == 2 and "--learning-rate must be a finite number" in result.stderr, result.stderr


@pytest.mark.parametrize("value", [".nan", "-1"])
def test_config_only_settings_are_checked_too(cli, completion_file, tmp_path, value):
    config = tmp_path / "train.yaml"
    config.write_text(f"max_grad_norm: {value}\n")
    result = cli("finetune", "--config", config, "--data", completion_file, "-o", tmp_path / "out")
    assert result.exit_code == 2, result.stderr
    assert "max_grad_norm (in --config) must be" in one_error_line(result)


# 3. a diverged loss stops the run; metrics.jsonl stays JSON

@pytest.mark.parametrize("extra, what", [
    ((), "eval loss at step 1 is nan"),  # the first update overflowed the weights
    (("--eval-fraction", "0"), "training loss at step 2 is nan"),
    (("--eval-fraction", "0", "--save-every", "1", "--lr", "1e39"), "trainable weights at step 1 are not finite"),
])
def test_a_diverged_loss_stops_the_run_before_a_broken_model_is_saved(cli, tiny_llama, chat_file, tmp_path,
                                                                       extra, what):
    out = tmp_path / "nan"
    result = cli("finetune", "--data", chat_file, "--model", tiny_llama, "-o", out, *QUICK, "--max-steps", "6",
                 "--learning-rate", "1e30", *extra)
    assert result.exit_code == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gptcli: error: training diverged: the " + what), last
    assert "lower --learning-rate (it was 1e+3" in last
    records = [strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert None in [r.get("loss", r.get("eval_loss")) for r in records] or "weights" in what
    assert not any((out / name).exists() for name in ("model.safetensors", "adapter", "README.md"))
    assert not list((out / "checkpoints").glob("step-*"))  # no checkpoint of broken weights either


# 4. the final save is atomic; --resume finishes the job

def _bash(limit_kib: int, args) -> subprocess.CompletedProcess:
    command = " ".join(f"'{part}'" for part in [*gptcli_command(), *map(str, args)])
    # ulimit -f caps file size (in KiB): the LoRA checkpoints fit, the merged model (~450 KiB) does not.
    return subprocess.run(["bash", "-c", f"ulimit -f {limit_kib}; exec {command}"], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))


@pytest.mark.parametrize("save_every, resumed_from", [("2", "resuming from"), ("0", "starting from step 0")])
def test_a_full_disk_at_the_final_save_leaves_no_half_model_and_resume_finishes(
        cli, tiny_llama, chat_file, tmp_path, save_every, resumed_from):
    out = tmp_path / "run"
    args = ["finetune", "--data", chat_file, "--model", tiny_llama, "-o", out, *QUICK, "--max-steps", "6",
            "--save-every", save_every, "--lr", "3e-3"]
    failed = _bash(300, args)
    assert failed.returncode == 1, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith(f"gptcli: error: cannot write the final model into {out}: ") and "--resume" in last
    assert "Traceback" not in failed.stderr
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "gptcli-run.json", "metrics.jsonl"]
    resumed = cli(*args, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert resumed_from in resumed.stderr
    assert [step for step, _ in step_losses(out)] == list(range(1, 7))
    for name in ("model.safetensors", "adapter/adapter_model.safetensors", "config.yaml", "README.md", "loss.png"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".tmp-*"))


def test_a_full_disk_under_metrics_is_one_line_and_resume_finishes(cli, tiny_llama, chat_file, tmp_path):
    out = tmp_path / "run"
    args = ["finetune", "--data", chat_file, "--model", tiny_llama, "-o", out, *QUICK, "--max-steps", "30",
            "--eval-fraction", "0"]
    failed = _bash(1, args)  # 1 KiB: metrics.jsonl fills up after a few steps
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == (f"gptcli: error: cannot write {out / 'metrics.jsonl'}: "
                                                      "File too large; free some space, then rerun with --resume")
    resumed = cli(*args, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert [step for step, _ in step_losses(out)] == list(range(1, 31))
    assert all(strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines())


# 5 and 6. weights keep the umask like every other file; the card shows the values used

def test_weights_follow_the_umask_and_the_card_shows_the_values_used(cli, tiny_llama, chat_file, tmp_path):
    out = tmp_path / "perm"
    previous = os.umask(0o027)
    try:
        result = cli("finetune", "--data", chat_file, "--model", tiny_llama, "-o", out, *QUICK, "--max-steps", "2")
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.stderr
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()
             and "checkpoints" not in p.parts}
    assert modes["model.safetensors"] == modes["adapter/adapter_model.safetensors"] == 0o640, modes
    assert set(modes.values()) == {0o640}, modes
    card = (out / "README.md").read_text()
    assert "| eval_fraction | 0.1 (auto) |" in card  # 40 rows: 10% held out
    assert "| eval_every | 1 (auto) |" in card and "| mixed_precision | no (auto) |" in card
    assert f"| model | {tiny_llama} |" in card


def test_the_card_names_the_default_model_when_none_was_given(completion_file):
    from gptcli.finetune import data as fmt
    from gptcli.finetune.config import TrainConfig
    from gptcli.finetune.loop import Summary
    from gptcli.finetune.recipe import Prepared
    from gptcli.finetune.report import model_card

    rows = fmt.load_rows(str(completion_file), "lm")
    card = model_card(TrainConfig(data=str(completion_file)), None, Prepared(rows[4:], rows[:4], [], 0.1),
                      Summary(2, 2, 1.0, 100))
    assert "| model | smollm2 (auto) |" in card and "| eval_fraction | 0.1 (auto) |" in card


# 7. help says what 0 means

def test_help_says_what_0_means_for_the_periods(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    text = " ".join(cli("finetune", "--help").stdout.split())
    assert "Evaluate every N steps, and after the last; 0: about ten evaluations per run" in text
    assert "Checkpoint every N steps; 0: at evaluations, but at most once every 2 minutes" in text
    assert "progress line every N steps; 0: about 50 lines per run" in text


# 8. one writer per output folder

def test_a_second_run_on_a_busy_output_is_refused_naming_the_first(cli, tiny_llama, chat_file, tmp_path):
    out = tmp_path / "busy"
    first = start(("--data", chat_file, "--model", tiny_llama, *LONG_RUN), out)
    try:
        wait_for_steps(out, first, 2)
        for extra in ((), ("--resume",)):
            second = cli("finetune", "--data", chat_file, "--model", tiny_llama, "-o", out, *LONG_RUN, *extra)
            assert second.exit_code == 2, second.stderr
            error = one_error_line(second)
            assert f"--output {out} is in use by another gptcli finetune (pid {first.pid})" in error
        assert first.poll() is None  # the first run goes on, untouched
    finally:
        first.kill()
        first.wait()
    assert all(strict_json(line) for line in (out / "metrics.jsonl").read_text().splitlines())


# 9. a run killed before its first checkpoint can start again; a folder the user filled is never wiped

@pytest.mark.parametrize("resume", [False, True])
def test_a_run_killed_before_its_first_checkpoint_can_start_again(cli, tiny_llama, chat_file, tmp_path, resume):
    out = tmp_path / "killed"
    killed = start(("--data", chat_file, "--model", tiny_llama, *LONG_RUN), out)
    wait_for_steps(out, killed, 2)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert not list(out.glob("checkpoints/step-*"))
    again = cli("finetune", "--data", chat_file, "--model", tiny_llama, "-o", out, *QUICK, "--max-steps", "3",
                "--eval-fraction", "0", *(("--resume",) if resume else ()))
    assert again.exit_code == 0, again.stderr
    assert ("no checkpoint in" if resume else "starting it afresh") in again.stderr
    assert [step for step, _ in step_losses(out)] == [1, 2, 3]  # the killed run's lines are gone
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("marked", [False, True])
def test_a_folder_the_user_filled_is_refused_and_left_as_it_was(cli, tiny_llama, chat_file, tmp_path, marked):
    out = tmp_path / "mine"
    (out / "checkpoints").mkdir(parents=True)
    (out / "metrics.jsonl").write_text("my own notes\n")
    (out / "notes.txt").write_text("keep me")
    if marked:
        (out / "gptcli-run.json").write_text("{}")
    before = sorted((str(p), p.read_bytes() if p.is_file() else b"") for p in out.rglob("*"))
    for extra in ((), ("--resume",)):
        result = cli("finetune", "--data", chat_file, "--model", tiny_llama, "-o", out, *QUICK, *extra)
        assert result.exit_code == 2, result.stderr
        assert "is not empty" in one_error_line(result) and "--resume" not in result.stderr
    assert sorted((str(p), p.read_bytes() if p.is_file() else b"") for p in out.rglob("*")) == before


# 10. SIGTERM and SIGHUP checkpoint first, and --resume completes

def start_hangable(args, out):
    """Like ``start``, with SIGHUP at its default too: under nohup the child would inherit it ignored."""
    def preexec():
        interruptible()
        signal.signal(signal.SIGHUP, signal.SIG_DFL)

    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([*gptcli_command(), "finetune", *map(str, args), "-o", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_saves_a_checkpoint_and_resume_completes(cli, tiny_llama, chat_file, tmp_path, signum):
    out = tmp_path / "term"
    process = start_hangable(("--data", chat_file, "--model", tiny_llama, *LONG_RUN), out)
    wait_for_steps(out, process, 3)
    process.send_signal(signum)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 128 + signum, stderr
    assert "checkpoint saved at step" in stderr and f"stopped by {signal.Signals(signum).name}" in stderr
    saved = int(next((out / "checkpoints").glob("step-*")).name.split("-")[1])
    assert saved >= 3
    resumed = cli("finetune", "--data", chat_file, "--model", tiny_llama, "-o", out, *QUICK, "--max-steps",
                  saved + 2, "--save-every", "1000", "--eval-fraction", "0", "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert f"resuming from {out / 'checkpoints'}" in resumed.stderr
    assert [step for step, _ in step_losses(out)] == list(range(1, saved + 3))
    assert (out / "README.md").is_file()


def test_sigterm_to_the_launcher_reaches_its_training_processes(cli, tiny_llama, chat_file, tmp_path):
    out = tmp_path / "ddp"
    parent = start_hangable(("--data", chat_file, "--model", tiny_llama, "--num-processes", "2", "--device", "cpu",
                             *LONG_RUN), out)
    wait_for_steps(out, parent, 2)
    busy = cli("finetune", "--data", chat_file, "--model", tiny_llama, "-o", out, *LONG_RUN)
    assert busy.exit_code == 2 and f"(pid {parent.pid})" in busy.stderr, busy.stderr  # the parent holds it
    parent.send_signal(signal.SIGTERM)
    stderr = parent.communicate(timeout=120)[1]
    assert parent.returncode == 128 + signal.SIGTERM, stderr
    assert "checkpoint saved at step" in stderr and "Traceback" not in stderr
    assert not re.search(r"^[WEI]\d{4} ", stderr, re.MULTILINE), stderr  # torchrun's own log lines
    assert list((out / "checkpoints").glob("step-*"))
