"""`gptcli serve` under concurrent clients: throughput and latency from 1 to 64 streams at once.

    python benchmarks/serve.py [--levels 1,4,16,64] [--max-tokens 64] [--requests-per-client 16]
                               [--max-requests 256] [--model M] [--dtype D] [--batch-size N]
                               [--skip-transformers] [--out benchmarks/results/serve.json]

Starts ``gptcli serve --port 0`` (the default model unless --model), warms it (a few requests,
then one burst at the largest level), and for each level of concurrent clients sends streamed
chat requests (``make_prompts`` of batch.py, greedy, ``stream_options.include_usage``) through
the openai client (``AsyncOpenAI``, ``max_retries=0``), each client sending its next request as
soon as its last one ends, ``min(requests-per-client x level, max-requests)`` requests a level.
Per level: requests/s and generated tokens/s (from each stream's usage) over the level's wall
time, p50/p95 time to first token (the first chunk with content) and p50/p95 latency (request
to the stream's end), the CPU seconds of the server and of this client (they share the cores),
and the ratio of tokens/s to the 1-client level: one request at a time, the baseline (goal: 16
clients >= 5x). Also timed as whole processes, with the median: a one-line prompt through the
warm server, ``gptcli generate --server URL "Say hi" --max-new-tokens 16`` (5 runs; skipped with
a note where --server does not work yet), and the same prompt run locally (3 runs, after the
server has stopped). Then, unless --skip-transformers, ``transformers serve
--continuous-batching`` on the same model folder at --hf-levels (fewer requests: its paged
attention is slow on CPU; its KV cache held to --hf-cb-memory of the RAM), or the reason it
could not run.
Prints a table and writes benchmarks/results/serve.json (serve_<model>.json with --model).
The server is always stopped at the end. Run it on an idle machine: the client and the
server share the 2 cores, and torch collapses when another job competes for them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from batch import make_prompts  # noqa: E402  (the prompts of the batch benchmark)

BIN = Path(sys.executable).parent
GPTCLI = str(BIN / "gptcli")
HOST = "127.0.0.1"  # every request of these benchmarks goes to this machine only
READY_PREFIX = "gptcli serve: listening on "
READY_SECONDS = 180  # the first start of the default model converts its GGUF (~30 s)
STOP_SECONDS = 60  # SIGTERM: uvicorn drains (at most 30 s), then the engine stops (at most 10 s)
ONE_LINE_PROMPT = "Say hi"


class BenchError(Exception):
    """A failure that ends the benchmark with a message (the server is still stopped)."""


def _terminate_on_sigterm() -> None:
    """SIGTERM to the benchmark runs its finally blocks (which stop the servers), as Ctrl-C does."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)


# --- servers -------------------------------------------------------------------------------


@dataclass
class Server:
    """A server process this benchmark started, its URL, its log, and the model name to send."""

    proc: subprocess.Popen
    url: str
    model: str
    log: Path
    start_s: float
    exit_code: int | None = None
    stop_s: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM, wait (bounded), SIGKILL if it is still there. Returns the exit code."""
        if self.proc.poll() is None:
            started = time.perf_counter()
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                print(f"  server {self.pid} still up {STOP_SECONDS} s after SIGTERM: killing it", flush=True)
                self.proc.kill()
                self.proc.wait(10)
            self.stop_s = time.perf_counter() - started
        self.exit_code = self.proc.returncode
        return self.exit_code


def start_gptcli(model: str | None, dtype: str, batch_size: int | None, max_queued: int, log: Path,
                 extra: tuple[str, ...] = ()) -> Server:
    """``gptcli serve --port 0``; waits (bounded) for the ready line on stderr and reads the port from it.

    Raises:
        BenchError: the server exited, or said nothing ready within READY_SECONDS (it is stopped).
    """
    command = [GPTCLI, "serve", "--host", HOST, "--port", "0", "--max-queued", str(max_queued)]
    if model:
        command += ["--model", model]
    if dtype != "auto":
        command += ["--dtype", dtype]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    command += list(extra)
    started = time.perf_counter()
    with open(log, "wb") as sink:  # a file, not a pipe: a pipe nobody reads would block the server's logging
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(proc, "", "", log, 0.0)
    try:
        deadline = started + READY_SECONDS
        while time.perf_counter() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith(READY_PREFIX):
                    # "gptcli serve: listening on http://127.0.0.1:PORT (model NAME)"
                    rest = line[len(READY_PREFIX):]
                    server.url, _, named = rest.partition(" (model ")
                    server.model = named.rstrip(")")
                    server.start_s = time.perf_counter() - started
                    if not server.url.startswith(f"http://{HOST}:"):
                        raise BenchError(f"the server listens on {server.url}, not on {HOST}")
                    return server
            if proc.poll() is not None:
                raise BenchError(f"gptcli serve exited with {proc.returncode} before it was ready:\n"
                                 f"{server.log_tail()}")
            time.sleep(0.2)
        raise BenchError(f"gptcli serve was not ready within {READY_SECONDS} s:\n{server.log_tail()}")
    except BaseException:
        server.stop()
        raise


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_transformers(folder: str, dtype: str, memory: float, log: Path) -> Server:
    """``transformers serve FOLDER --continuous-batching`` on a free port; ready when /health answers."""
    port = free_port()
    command = [str(BIN / "transformers"), "serve", folder, "--continuous-batching", "--host", HOST,
               "--port", str(port), "--device", "cpu", "--dtype", dtype, "--cb-max-memory-percent", str(memory)]
    started = time.perf_counter()
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(proc, f"http://{HOST}:{port}", folder, log, 0.0)
    try:
        deadline = started + READY_SECONDS
        while time.perf_counter() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"transformers serve exited with {proc.returncode}: {server.log_tail(5)}")
            try:
                get_json(server.url + "/health", timeout=2)
                server.start_s = time.perf_counter() - started
                return server
            except OSError:
                time.sleep(0.5)
        raise BenchError(f"transformers serve was not ready within {READY_SECONDS} s: {server.log_tail(5)}")
    except BaseException:
        server.stop()
        raise


def get_json(url: str, timeout: float = 10) -> dict:
    if not url.startswith(f"http://{HOST}:"):
        raise ValueError(f"refusing a request off this machine: {url}")
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def rss_mib(pid: int) -> float | None:
    """VmRSS of a process in MiB (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def commit() -> dict:
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "tree_dirty": bool(git("status", "--porcelain", "--", "gptcli"))}


# --- clients --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One streamed request as its client saw it."""

    ok: bool
    latency_s: float = 0.0
    ttft_s: float | None = None
    completion_tokens: int = 0
    prompt_tokens: int = 0
    finish_reason: str | None = None
    text: str = ""
    error: str | None = None


def client_of(url: str, timeout: float):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=timeout)


def error_text(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    text = f"{type(exc).__name__}: {exc}"
    if status is not None:
        text = f"HTTP {status} {type(exc).__name__}: {body if body is not None else exc}"
    return text[:400]


async def streamed_chat(client, model: str, prompt: str, max_tokens: int) -> Outcome:
    """One streamed chat request to its end: TTFT is the first chunk carrying content."""
    started = time.perf_counter()
    outcome = Outcome(ok=False)
    parts: list[str] = []
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0,
            stream=True, stream_options={"include_usage": True})
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    outcome.completion_tokens = chunk.usage.completion_tokens
                    outcome.prompt_tokens = chunk.usage.prompt_tokens
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        if outcome.ttft_s is None:
                            outcome.ttft_s = time.perf_counter() - started
                        parts.append(choice.delta.content)
                    if choice.finish_reason:
                        outcome.finish_reason = choice.finish_reason
        outcome.latency_s = time.perf_counter() - started
        if outcome.ttft_s is None:  # the model stopped at once: its first answer is the finish
            outcome.ttft_s = outcome.latency_s
        outcome.text = "".join(parts)
        outcome.ok = outcome.finish_reason is not None
        if not outcome.ok:
            outcome.error = "the stream ended without a finish_reason"
    except Exception as exc:  # noqa: BLE001  (counted and reported, the level goes on)
        outcome.latency_s = time.perf_counter() - started
        outcome.error = error_text(exc)
    return outcome


async def run_clients(url: str, model: str, prompts: list[str], clients: int, max_tokens: int,
                      request_timeout: float, level_timeout: float) -> tuple[list[Outcome], float, bool]:
    """``clients`` tasks share the prompts, each sending its next request when its last one ends.

    Returns the outcomes (in prompt order; None never: unsent ones are errors), the wall
    seconds, and whether the level ran past ``level_timeout`` (its requests are then cancelled).
    """
    outcomes: list[Outcome | None] = [None] * len(prompts)
    next_index = 0

    async def one_client(client) -> None:
        nonlocal next_index
        while next_index < len(prompts):
            index = next_index
            next_index += 1
            outcomes[index] = await streamed_chat(client, model, prompts[index], max_tokens)

    timed_out = False
    async with client_of(url, request_timeout) as client:
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(one_client(client)) for _ in range(min(clients, len(prompts)))]
        try:
            gathered = asyncio.gather(*tasks)
            gathered.add_done_callback(_retrieved)  # interrupted: no 'never retrieved' noise at exit
            await asyncio.wait_for(gathered, level_timeout)
        except asyncio.TimeoutError:
            timed_out = True
        wall = time.perf_counter() - started
    done = [o if o is not None else Outcome(ok=False, error="not sent or cut off by --level-timeout")
            for o in outcomes]
    return done, wall, timed_out


def _retrieved(future) -> None:
    if not future.cancelled():
        future.exception()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summarize(clients: int, outcomes: list[Outcome], wall: float, timed_out: bool, server_cpu: float | None,
              client_cpu: float) -> dict:
    good = [o for o in outcomes if o.ok]
    tokens = sum(o.completion_tokens for o in good)
    errors = [o.error for o in outcomes if not o.ok]
    ttfts = [o.ttft_s for o in good if o.ttft_s is not None]
    latencies = [o.latency_s for o in good]
    return {
        "clients": clients, "requests": len(outcomes), "completed": len(good), "errors": len(errors),
        "error_examples": sorted(set(errors))[:3], "timed_out": timed_out, "wall_s": wall,
        "requests_per_s": len(good) / wall, "tokens_per_s": tokens / wall, "generated_tokens": tokens,
        "mean_tokens_per_request": tokens / len(good) if good else 0.0,
        "finish_reasons": {r: sum(o.finish_reason == r for o in good) for r in {o.finish_reason for o in good}},
        "ttft_p50_s": percentile(ttfts, 50), "ttft_p95_s": percentile(ttfts, 95),
        "latency_p50_s": percentile(latencies, 50), "latency_p95_s": percentile(latencies, 95),
        "server_cpu_s": server_cpu, "client_cpu_s": client_cpu,
    }


def run_level(server: Server, clients: int, count: int, args) -> dict:
    prompts = make_prompts(count)
    cpu_before, client_before = cpu_seconds(server.pid), time.process_time()
    outcomes, wall, timed_out = asyncio.run(run_clients(server.url, server.model, prompts, clients, args.max_tokens,
                                                        args.request_timeout, args.level_timeout))
    cpu_after = cpu_seconds(server.pid)
    server_cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return summarize(clients, outcomes, wall, timed_out, server_cpu, time.process_time() - client_before)


def warm(server: Server, args, sequential: int, burst: int) -> dict:
    """A few requests one at a time, then one burst of ``burst`` at once (short answers)."""
    started = time.perf_counter()
    prompts = make_prompts(max(sequential, burst))
    first = asyncio.run(run_clients(server.url, server.model, prompts[:sequential], 1, 16,
                                    args.request_timeout, args.level_timeout))[0] if sequential else []
    second = asyncio.run(run_clients(server.url, server.model, prompts[:burst], burst, 8,
                                     args.request_timeout, args.level_timeout))[0] if burst else []
    failed = [o.error for o in first + second if not o.ok]
    if failed:
        raise BenchError(f"warm-up failed on {server.url}: {len(failed)} of {len(first) + len(second)} requests; "
                         f"first: {failed[0]}\n{server.log_tail()}")
    return {"sequential": sequential, "burst": burst, "seconds": time.perf_counter() - started}


def run_levels(server: Server, levels: list[int], per_client: int, cap: int, args, label: str) -> list[dict]:
    rows = []
    for clients in levels:
        count = min(per_client * clients, cap)
        row = run_level(server, clients, count, args)
        row["health_after"] = health_of(server)
        rows.append(row)
        print(row_line(label, row, rows[0]), flush=True)
        if row["timed_out"] or not server.alive():
            print(f"  {label}: stopping the levels here ({'level timed out' if row['timed_out'] else 'server died'})")
            break
    base = rows[0]["tokens_per_s"] if rows and rows[0]["clients"] == 1 else None
    for row in rows:
        row["tokens_per_s_vs_1_client"] = row["tokens_per_s"] / base if base else None
    return rows


def health_of(server: Server) -> dict | None:
    try:
        return get_json(server.url + "/health", timeout=5)
    except (OSError, ValueError):
        return None


def fmt(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


HEADER = (f"{'server':16s} {'clients':>7s} {'reqs':>5s} {'err':>4s} {'wall s':>7s} {'req/s':>6s} {'tok/s':>7s} "
          f"{'x1':>5s} {'ttft p50':>8s} {'p95':>6s} {'lat p50':>7s} {'p95':>6s} {'srv cpu':>7s} {'cli cpu':>7s}")


def row_line(label: str, row: dict, first: dict) -> str:
    ratio = row["tokens_per_s"] / first["tokens_per_s"] if first["clients"] == 1 and first["tokens_per_s"] else None
    return (f"{label:16s} {row['clients']:7d} {row['requests']:5d} {row['errors']:4d} {row['wall_s']:7.1f} "
            f"{row['requests_per_s']:6.2f} {row['tokens_per_s']:7.1f} {fmt(ratio, '5.2f'):>5s} "
            f"{fmt(row['ttft_p50_s'], '8.3f'):>8s} {fmt(row['ttft_p95_s'], '6.2f'):>6s} "
            f"{fmt(row['latency_p50_s'], '7.2f'):>7s} {fmt(row['latency_p95_s'], '6.2f'):>6s} "
            f"{fmt(row['server_cpu_s'], '7.1f'):>7s} {row['client_cpu_s']:7.1f}")


# --- whole processes ------------------------------------------------------------------------


def timed_runs(command: list[str], runs: int, timeout: float) -> dict:
    """Wall seconds of ``runs`` runs of a command; stops at the first failure (its reason kept)."""
    seconds, outputs = [], []
    for _ in range(runs):
        started = time.perf_counter()
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"command": command, "skipped": f"ran past {timeout:.0f} s", "seconds": seconds}
        wall = time.perf_counter() - started
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            return {"command": command, "skipped": f"exit {done.returncode}: {reason}", "seconds": seconds}
        seconds.append(wall)
        outputs.append(done.stdout.strip())
    return {"command": command, "runs": runs, "seconds": seconds, "median_s": statistics.median(seconds),
            "min_s": min(seconds), "output": outputs[-1][:200]}


def has_server_option() -> bool:
    done = subprocess.run([GPTCLI, "generate", "--help"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})
    return "--server" in done.stdout


def one_line_through_server(server: Server, runs: int) -> dict:
    command = [GPTCLI, "generate", "--server", server.url, ONE_LINE_PROMPT, "--max-new-tokens", "16",
               "--temperature", "0"]
    if not has_server_option():
        note = "skipped: `gptcli generate` has no --server option yet"
        print(f"  one-line prompt via --server: {note}", flush=True)
        return {"command": command, "skipped": note}
    result = timed_runs(command, runs, timeout=120)
    if "skipped" in result:
        print(f"  one-line prompt via --server skipped: {result['skipped']}", flush=True)
    return result


def one_line_local(model: str | None, dtype: str, runs: int) -> dict:
    command = [GPTCLI, "generate", ONE_LINE_PROMPT, "--max-new-tokens", "16", "--temperature", "0"]
    if model:
        command += ["--model", model]
    if dtype != "auto":
        command += ["--dtype", dtype]
    return timed_runs(command, runs, timeout=300)


# --- transformers serve ---------------------------------------------------------------------


def model_folder(model: str | None) -> str:
    """The plain model folder gptcli loads for ``model`` (the converted GGUF for the default)."""
    from gptcli.models.resolve import resolve

    source = resolve(model)
    if source.folder is not None:
        return str(source.folder)
    if source.gguf is not None:
        from gptcli.models.convert import converted_folder

        return str(converted_folder(source.gguf))
    raise BenchError(f"{model!r} is a hub id without a local folder; transformers serve needs one offline")


def transformers_dtype(dtype: str) -> str:
    if dtype in ("float32", "bfloat16", "float16"):
        return dtype
    return "auto" if dtype == "auto" else "auto (gptcli --dtype %s has no transformers equivalent)" % dtype


def run_transformers(args, work: Path) -> dict:
    try:
        import importlib.util

        missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
        if missing:
            return {"skipped": f"transformers serve needs {', '.join(missing)} (pip install 'transformers[serving]')"}
        if not (BIN / "transformers").exists():
            return {"skipped": f"no `transformers` command in {BIN}"}
        folder = model_folder(args.model)
        dtype = transformers_dtype(args.dtype).split(" ")[0]
    except Exception as exc:  # noqa: BLE001  (optional: the reason goes in the results)
        return {"skipped": error_text(exc)}
    result: dict = {"command": f"transformers serve {folder} --continuous-batching --device cpu --dtype {dtype} "
                               f"--cb-max-memory-percent {args.hf_cb_memory}",
                    "folder": folder}
    server = None
    try:
        server = start_transformers(folder, dtype, args.hf_cb_memory, work / "transformers-serve.log")
        result["start_s"] = server.start_s
        print(f"  transformers serve ready in {server.start_s:.1f} s on {server.url}; warming", flush=True)
        result["warmup"] = warm(server, args, sequential=2, burst=0)
        result["rss_after_warmup_mib"] = rss_mib(server.pid)
        levels = [int(x) for x in args.hf_levels.split(",") if x.strip()]
        result["levels"] = run_levels(server, levels, args.hf_requests_per_client, args.hf_max_requests, args,
                                      "transformers CB")
        result["rss_after_load_mib"] = rss_mib(server.pid)
    except Exception as exc:  # noqa: BLE001
        result["skipped"] = error_text(exc)
        if server is not None:
            result["log_tail"] = server.log_tail(8)
        print(f"  transformers serve: {result['skipped']}", flush=True)
    finally:
        if server is not None:
            result["exit_code"] = server.stop()
    return result


# --- main -----------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model for gptcli serve (default: its default model)")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=None, help="gptcli serve --batch-size (default: its own)")
    parser.add_argument("--max-queued", type=int, default=None,
                        help="gptcli serve --max-queued (default: 4 x the largest level, so no 429)")
    parser.add_argument("--levels", default="1,4,16,64", help="concurrent clients per level, 1 first")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests-per-client", type=int, default=16)
    parser.add_argument("--max-requests", type=int, default=256, help="cap on the requests of one level")
    parser.add_argument("--warmup", type=int, default=3, help="sequential warm-up requests (then one burst)")
    parser.add_argument("--server-runs", type=int, default=5, help="runs of `generate --server` (median)")
    parser.add_argument("--local-runs", type=int, default=3, help="runs of the local `generate` (median)")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--hf-levels", default="1,16")
    parser.add_argument("--hf-requests-per-client", type=int, default=8)
    parser.add_argument("--hf-max-requests", type=int, default=32)
    parser.add_argument("--hf-cb-memory", type=float, default=0.1,
                        help="transformers --cb-max-memory-percent: its paged KV cache takes ~60%% of the RAM "
                             "(14 GiB here) unless told")
    parser.add_argument("--request-timeout", type=float, default=300.0, help="seconds for one request")
    parser.add_argument("--level-timeout", type=float, default=420.0, help="seconds for one level")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.level_list = [int(x) for x in args.levels.split(",") if x.strip()]
    if not args.level_list or min(args.level_list) < 1:
        parser.error("--levels: positive numbers, e.g. 1,4,16,64")
    if args.max_queued is None:
        args.max_queued = max(64, 4 * max(args.level_list))
    return args


def output_path(args) -> Path:
    if args.out:
        return Path(args.out)
    name = "serve.json" if args.model is None else f"serve_{Path(args.model).name or 'model'}.json"
    return HERE / "results" / name


def main(argv=None) -> int:
    _terminate_on_sigterm()
    args = parse_args(argv)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"note: load average {load:.2f}: the machine is not idle, the figures will be low", flush=True)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **commit(),
                     "cpus": os.cpu_count(), "load_average_at_start": load, "model": args.model or "default",
                     "dtype": args.dtype, "max_tokens": args.max_tokens, "levels": args.level_list,
                     "requests_per_level": {c: min(args.requests_per_client * c, args.max_requests)
                                            for c in args.level_list},
                     "client": "openai.AsyncOpenAI (max_retries=0), one asyncio process, streamed chat, greedy"}
    with tempfile.TemporaryDirectory(prefix="gptcli-bench-serve-") as tmp:
        work = Path(tmp)
        server = None
        try:
            print("starting gptcli serve ...", flush=True)
            server = start_gptcli(args.model, args.dtype, args.batch_size, args.max_queued, work / "serve.log")
            results["gptcli"] = gptcli = {"url": server.url, "served_model": server.model, "start_s": server.start_s,
                                          "max_queued": args.max_queued, "batch_size": args.batch_size or "auto",
                                          "rss_idle_mib": rss_mib(server.pid)}
            print(f"  ready in {server.start_s:.1f} s on {server.url} (model {server.model}); warming", flush=True)
            gptcli["warmup"] = warm(server, args, args.warmup, max(args.level_list))
            gptcli["rss_after_warmup_mib"] = rss_mib(server.pid)
            gptcli["one_line_via_server"] = one_line_through_server(server, args.server_runs)
            print(HEADER, flush=True)
            gptcli["levels"] = run_levels(server, args.level_list, args.requests_per_client, args.max_requests,
                                          args, "gptcli serve")
            gptcli["rss_after_load_mib"] = rss_mib(server.pid)
            gptcli["health_at_end"] = health_of(server)
        finally:
            if server is not None:
                code = server.stop()
                results.setdefault("gptcli", {}).update(exit_code=code, stop_s=server.stop_s)
                if code not in (0, 143, -signal.SIGTERM):
                    print(f"  gptcli serve exited with {code}:\n{server.log_tail()}", flush=True)
        print("one-line prompt, local (the server has stopped) ...", flush=True)
        results["one_line_local"] = one_line_local(args.model, args.dtype, args.local_runs)
        if args.skip_transformers:
            results["transformers_serve"] = {"skipped": "--skip-transformers"}
        else:
            print("transformers serve --continuous-batching ...", flush=True)
            results["transformers_serve"] = run_transformers(args, work)
    report(results)
    out = output_path(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    levels = results["gptcli"].get("levels", [])
    return 1 if any(row["errors"] for row in levels) else 0


def report(results: dict) -> None:
    gptcli = results["gptcli"]
    print()
    print(HEADER)
    for label, rows in (("gptcli serve", gptcli.get("levels", [])),
                        ("transformers CB", results["transformers_serve"].get("levels", []))):
        for row in rows:
            print(row_line(label, row, rows[0]))
    if "skipped" in results["transformers_serve"]:
        print(f"transformers serve: {results['transformers_serve']['skipped']}")
    by_clients = {row["clients"]: row for row in gptcli.get("levels", [])}
    if 1 in by_clients and 16 in by_clients and by_clients[1]["tokens_per_s"]:
        ratio = by_clients[16]["tokens_per_s"] / by_clients[1]["tokens_per_s"]
        results["goal_16_clients_vs_one_at_a_time"] = {"ratio": ratio, "goal": 5.0, "met": ratio >= 5.0}
        print(f"16 clients / one at a time: {ratio:.2f}x tokens/s (goal >= 5x: {'met' if ratio >= 5 else 'NOT met'})")
    remote, local = gptcli.get("one_line_via_server", {}), results["one_line_local"]
    for name, run in (("one-line prompt via --server", remote), ("one-line prompt, local", local)):
        if "median_s" in run:
            print(f"{name:30s} median {run['median_s']:.2f} s over {run['runs']} runs (min {run['min_s']:.2f} s)")
        else:
            print(f"{name:30s} {run.get('skipped', 'not run')}")
    if "median_s" in remote and "median_s" in local:
        results["one_line_local_vs_server"] = local["median_s"] / remote["median_s"]
        print(f"local / --server: {results['one_line_local_vs_server']:.1f}x")
    print(f"gptcli serve RSS: idle {fmt(gptcli.get('rss_idle_mib'), '.0f')} MiB, after warm-up "
          f"{fmt(gptcli.get('rss_after_warmup_mib'), '.0f')} MiB, after the levels "
          f"{fmt(gptcli.get('rss_after_load_mib'), '.0f')} MiB; exit code {gptcli.get('exit_code')}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"serve benchmark failed: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("serve benchmark interrupted (the servers it started are stopped)", file=sys.stderr)
        sys.exit(130)
