"""Resume and processes: a SIGKILLed run resumed ends with the same per-step losses; Ctrl-C saves;
two CPU processes (gloo) train end to end. These run the real entry point in subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.conftest import gptcli_command, interruptible
from tests.finetune.conftest import completion_rows, metrics, write_jsonl

RUN = ("--max-steps", "24", "--batch-size", "4", "--max-length", "48", "--eval-every", "8", "--save-every", "4",
       "--log-every", "4", "--learning-rate", "3e-3", "--lora-dropout", "0.1")


def start(args, out):
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the same thread count in every run: same float sums
    return subprocess.Popen([*gptcli_command(), "finetune", *map(str, args), "-o", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=interruptible)


def wait_for(path, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def step_losses(out):
    return [(m["step"], m["loss"]) for m in metrics(out) if "loss" in m]


def test_sigkill_then_resume_gives_the_same_losses(tiny_llama, chat_file, tmp_path):
    args = ("--data", chat_file, "--model", tiny_llama, *RUN)
    reference = start(args, tmp_path / "ref")
    assert reference.wait(300) == 0, reference.communicate()[1]
    killed = start(args, tmp_path / "run")
    wait_for(tmp_path / "run" / "checkpoints" / "step-0000008", killed)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert not (tmp_path / "run" / "README.md").exists()  # it really died mid-run
    resumed = start((*args, "--resume"), tmp_path / "run")
    stderr = resumed.communicate(timeout=300)[1]
    assert resumed.returncode == 0, stderr
    assert "resuming from" in stderr
    expected, got = step_losses(tmp_path / "ref"), step_losses(tmp_path / "run")
    assert [s for s, _ in got] == list(range(1, 25))
    assert [loss for _, loss in got] == pytest.approx([loss for _, loss in expected], rel=1e-6)
    assert [m["eval_loss"] for m in metrics(tmp_path / "run") if "eval_loss" in m] == \
        pytest.approx([m["eval_loss"] for m in metrics(tmp_path / "ref") if "eval_loss" in m], rel=1e-6)


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tiny_llama, chat_file, tmp_path):
    out = tmp_path / "run"
    process = start(("--data", chat_file, "--model", tiny_llama, *RUN[:-6], "--save-every", "100",
                     "--max-steps", "400"), out)
    wait_for(out / "metrics.jsonl", process)
    while len((out / "metrics.jsonl").read_text().splitlines()) < 3:
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130, stderr
    assert "checkpoint saved at step" in stderr and "--resume" in stderr
    assert len(list((out / "checkpoints").glob("step-*"))) == 1


def test_two_cpu_processes_train_end_to_end(tiny_llama, chat_file, tmp_path):
    out = tmp_path / "ddp"
    process = start(("--data", chat_file, "--model", tiny_llama, "--num-processes", "2", "--max-steps", "6",
                     "--batch-size", "2", "--max-length", "48", "--eval-every", "3", "--learning-rate", "5e-3",
                     "--device", "cpu"), out)
    stderr = process.communicate(timeout=300)[1]
    assert process.returncode == 0, stderr
    assert "training in 2 processes (MULTI_CPU)" in stderr
    records = metrics(out)
    assert [m["step"] for m in records if "loss" in m] == list(range(1, 7))
    assert records[3]["epoch"] > 0  # each step consumed 2 processes x 2 examples
    assert (out / "config.json").is_file() and (out / "adapter" / "adapter_config.json").is_file()
    evals = [m["eval_loss"] for m in records if "eval_loss" in m]
    assert evals[-1] < evals[0]


def _short_run(cli, model, data, out, *extra):
    return cli("finetune", "--data", data, "--model", model, "-o", out, "--method", "full", "--save-every", "2",
               "--eval-fraction", "0", "--batch-size", "4", "--max-length", "48", *extra)


def test_a_checkpoint_cut_short_by_a_kill_is_never_resumed_from(cli, tiny_gpt2, completion_file, tmp_path):
    out = tmp_path / "run"
    assert _short_run(cli, tiny_gpt2, completion_file, out, "--max-steps", "6").exit_code == 0
    # What a SIGKILL in the middle of writing checkpoint 8 leaves: its temporary folder, half written.
    half = out / "checkpoints" / ".tmp-step-0000008-424242"
    half.mkdir()
    (half / "trainable.pt").write_bytes(b"PK\x03\x04 cut short")
    resumed = _short_run(cli, tiny_gpt2, completion_file, out, "--max-steps", "10", "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert "step-0000004" in resumed.stderr  # the last whole checkpoint
    assert [m["step"] for m in metrics(out) if "loss" in m][-1] == 10
    assert not half.exists()  # the leftover is cleaned up


def test_resume_from_another_runs_checkpoint_is_refused(cli, tiny_gpt2, completion_file, tmp_path):
    out = tmp_path / "run"
    assert _short_run(cli, tiny_gpt2, completion_file, out, "--max-steps", "4").exit_code == 0
    other_file = write_jsonl(tmp_path / "other.jsonl", completion_rows(seed=5))
    other_data = _short_run(cli, tiny_gpt2, other_file, out, "--max-steps", "4", "--resume")
    other_batch = _short_run(cli, tiny_gpt2, completion_file, out, "--max-steps", "4", "--resume", "--seed", "7")
    for result, flag in ((other_data, "--data"), (other_batch, "--seed")):
        assert result.exit_code == 2, result.stderr
        assert "another run" in result.stderr and flag in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_sigkill_while_a_checkpoint_is_written_resumes_from_the_one_before(tiny_llama, chat_file, tmp_path):
    # Full training writes every weight and the optimizer state at each checkpoint: a window wide
    # enough to land a real SIGKILL inside it, while the temporary folder is being filled.
    args = ("--data", chat_file, "--model", tiny_llama, "--method", "full", "--max-steps", "12", "--batch-size",
            "4", "--max-length", "48", "--save-every", "1", "--eval-fraction", "0", "--learning-rate", "1e-3")
    out = tmp_path / "run"
    killed = start(args, out)
    checkpoints = out / "checkpoints"
    deadline = time.monotonic() + 120
    caught = None
    while caught is None and killed.poll() is None and time.monotonic() < deadline:
        if checkpoints.is_dir():
            caught = next((p for p in checkpoints.iterdir() if p.name.startswith(".tmp-step-00000")
                           and not p.name.startswith(".tmp-step-0000001")), None)
        if caught is None:
            time.sleep(0.0005)
    assert caught is not None, "no checkpoint write was caught in progress"
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert caught.exists(), "the kill landed after the write finished"  # it really died mid-write
    finished = sorted(p.name for p in checkpoints.glob("step-*"))
    assert finished and all(name < caught.name.split("-", 1)[1][:12] for name in finished)
    resumed = start((*args, "--resume"), out)
    stderr = resumed.communicate(timeout=300)[1]
    assert resumed.returncode == 0, stderr
    assert f"resuming from {checkpoints / finished[-1]}" in stderr
    assert [m["step"] for m in metrics(out) if "loss" in m] == list(range(1, 13))
    assert not list(checkpoints.glob(".tmp-*"))
