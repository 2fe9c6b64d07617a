"""Real processes: pipes, stdin, signals, and --help staying light."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from tests.conftest import gptcli_command, interruptible


def _run(args, **kw):
    return subprocess.run(gptcli_command() + [str(a) for a in args], capture_output=True, text=True, timeout=120, **kw)


def test_help_imports_neither_torch_nor_transformers():
    code = ("import sys; from gptcli.__main__ import main; main(['generate', '--help']); main(['--help']); "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print('HEAVY', bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    assert "HEAVY []" in out


def test_python_dash_m_and_version():
    result = subprocess.run([sys.executable, "-m", "gptcli", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("gptcli ")


def test_piped_stdin_in_a_real_process(tiny_llama):
    result = _run(["generate", "-m", tiny_llama, "--max-new-tokens", "3", "--json"], input="the dog ran\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["prompt"] == "the dog ran\n"


def test_closed_pipe_ends_quietly(tiny_llama, tmp_path):
    (tmp_path / "p.txt").write_text("".join(f"line {i}\n" for i in range(40)))
    cmd = gptcli_command() + ["generate", "--input", str(tmp_path / "p.txt"), "-m", str(tiny_llama),
                              "--max-new-tokens", "3", "--batch-size", "1", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert json.loads(first)["id"] == 1
    assert proc.returncode == 0 and "Traceback" not in stderr and "Error" not in stderr


def test_ctrl_c_exits_130_and_keeps_finished_records(tiny_llama, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(24)))
    out = tmp_path / "out.jsonl"
    args = ["generate", "--input", str(prompts), "-o", str(out), "-m", str(tiny_llama),
            "--max-new-tokens", "30", "--batch-size", "1"]
    proc = subprocess.Popen(gptcli_command() + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    deadline = time.time() + 90
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    partial = [json.loads(line) for line in out.read_text().splitlines()]
    assert 2 <= len(partial) < 24
    resumed = _run(args[:-2] + ["--batch-size", "8"])
    assert resumed.returncode == 0
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == list(range(1, 25))


def test_no_color_and_no_progress_codes_when_stderr_is_not_a_terminal(tiny_llama, tmp_path):
    (tmp_path / "p.txt").write_text("a\nb\nc\n")
    result = _run(["-v", "generate", "--input", tmp_path / "p.txt", "-m", tiny_llama, "--max-new-tokens", "2"])
    assert result.returncode == 0
    assert "\x1b[" not in result.stderr and "\r" not in result.stderr


def _run_on_a_terminal(cmd: list[str]) -> tuple[int, bytes, bytes]:
    """Run with stderr on a pseudo-terminal; return the exit code, what the terminal showed, and stdout."""
    import os
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=follower, env=dict(os.environ, TERM="xterm"))
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    stdout = proc.communicate(timeout=120)[0]
    return proc.returncode, seen, stdout


def test_progress_is_drawn_when_stderr_is_a_terminal(tiny_llama, tmp_path):
    (tmp_path / "p.txt").write_text("".join(f"line {i}\n" for i in range(12)))
    code, seen, stdout = _run_on_a_terminal(gptcli_command() + [
        "generate", "--input", str(tmp_path / "p.txt"), "-m", str(tiny_llama), "--max-new-tokens", "20",
        "--batch-size", "1"])
    assert code == 0
    assert b"generating" in seen and b"/12" in seen  # the bar, with its count, on the terminal
    assert stdout.decode().count("\n") == 12 and b"generating" not in stdout


def test_finetune_bar_shows_loss_and_speed_on_a_terminal(tiny_gpt2, tmp_path):
    import json

    rows = "".join(json.dumps({"prompt": "what is the cat?\n", "completion": "the cat is small."}) + "\n"
                   for _ in range(16))
    (tmp_path / "d.jsonl").write_text(rows)
    code, seen, _stdout = _run_on_a_terminal(gptcli_command() + [
        "finetune", "--data", str(tmp_path / "d.jsonl"), "-m", str(tiny_gpt2), "-o", str(tmp_path / "out"),
        "--max-steps", "6", "--eval-fraction", "0", "--batch-size", "4"])
    assert code == 0
    assert b"/6" in seen and b"tok/s" in seen and b"loss " in seen
