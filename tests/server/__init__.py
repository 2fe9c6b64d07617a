"""A real `gptcli serve` subprocess on a free local port, and plain HTTP helpers to talk to it.

Every wait here is bounded: a server that never says it listens, or never exits, fails the
test with its stderr instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import gptcli_command, interruptible

READY = re.compile(r"^gptcli serve: listening on (http://127\.0\.0\.1:(\d+)) \(model (.+)\)$")
START_SECONDS = 120  # imports and the model load on a busy 2-core machine
STOP_SECONDS = 60


def server_env(session_dir: Path) -> dict:
    """The environment conftest's autouse fixture gives a test, for a module-scoped server."""
    env = dict(os.environ, HF_HOME=str(session_dir / "hf"), GPTCLI_CACHE=str(session_dir / "gptcli-cache"),
               XDG_CACHE_HOME=str(session_dir / "xdg"), HF_HUB_OFFLINE="1", NO_COLOR="1")
    for name in ("GPTCLI_DEBUG", "GPTCLI_API_KEY"):
        env.pop(name, None)
    return env


class ServerProcess:
    """`gptcli serve ARGS --port 0`, with its stderr collected line by line as it comes."""

    def __init__(self, args: list[str], env: dict):
        self.proc = subprocess.Popen(gptcli_command() + ["serve", *map(str, args), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=interruptible)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url = self.model = None
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            match = READY.match(self.lines[-1])
            if match:
                self.url, self.model = match.group(1), match.group(3)
                self._ready.set()
        self._ready.set()  # the process ended: wake the waiter

    def wait_ready(self) -> "ServerProcess":
        self._ready.wait(START_SECONDS)
        if self.url is None:
            self.proc.kill()
            raise AssertionError("gptcli serve did not start:\n" + "\n".join(self.lines))
        return self

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Send ``signum``, wait for the exit; (exit code, stdout, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            self.proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)  # the last lines, written just before the exit
        return self.proc.returncode, self.proc.stdout.read(), self.stderr

    def client(self, api_key: str = "unused", **options):
        """The real openai client pointed at this server (no retries: a 429 must show)."""
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120, **options)


@contextmanager
def running_server(args: list, session_dir: Path):
    """A ready `gptcli serve ARGS` for the block (a module's fixture), stopped however the block ends."""
    process = ServerProcess(list(args), server_env(session_dir)).wait_ready()
    try:
        yield process
    finally:
        process.stop()


def request(url: str, path: str, body=None, headers: dict | None = None, method: str | None = None,
            timeout: float = 120) -> tuple[int, dict, object]:
    """One HTTP request with urllib: (status, headers, parsed JSON body or text)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url + path, data=data, headers=sent, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, dict(response.headers), _parsed(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), _parsed(error.read())


def _parsed(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def health(url: str) -> dict:
    status, _, body = request(url, "/health")
    assert status == 200, body
    return body["requests"]


def wait_idle(url: str, seconds: float = 30) -> dict:
    """/health's counters once nothing is in flight (bounded)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        counts = health(url)
        if counts["in_flight"] == 0:
            return counts
        time.sleep(0.05)
    raise AssertionError(f"requests still in flight after {seconds} s: {health(url)}")


def assert_clean_stderr(stderr: str) -> None:
    """Only gptcli's own lines: no traceback, no uvicorn log, no third-party warning."""
    assert "Traceback" not in stderr, stderr
    for line in stderr.splitlines():
        assert line.startswith("gptcli"), f"a line that is not gptcli's: {line!r}\n{stderr}"
