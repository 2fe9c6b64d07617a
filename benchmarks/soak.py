"""Soak test of `gptcli serve`: many mixed requests, clients that leave mid-stream, memory after.

    python benchmarks/soak.py [--requests 200] [--concurrency 32] [--max-tokens 64]
                              [--disconnect-every 8] [--rss-tolerance 0.10] [--rounds 1]
                              [--model M] [--out benchmarks/results/soak.json]

Starts ``gptcli serve --port 0`` (the default model unless --model) and records its RSS
(VmRSS of /proc/PID/status) when idle, after a few requests one at a time, and after one
burst of --concurrency requests at once: that last one is the baseline, as the running batch
then holds its rows. Then --requests requests from --concurrency clients (openai's
AsyncOpenAI, ``max_retries=0``), each sending its next request when its last one ends, in a
fixed cycle of 8: streamed chat (3 of 8), chat (2), streamed completion, completion, and a
streamed chat with a long max_tokens whose client closes the stream after
--disconnect-after content chunks (every --disconnect-every-th request; 25 of 200).
Checks, each reported with its numbers (exit 1 if one fails):
- every request that was not meant to disconnect completed with a valid answer (a finish
  reason stop/length, usage within max_tokens, text when it has tokens; streams: one id, usage);
- /health, once nothing is in flight (bounded wait): in_flight 0, waiting 0, failed 0, the
  finished + cancelled of the load equal to its requests, and cancelled at least the
  disconnects that left before the end of their answer and at most all disconnects;
- the server is still up: a final request works and /health says "ok";
- RSS after the load, after a bounded settle, is within --rss-tolerance of the baseline
  ("memory returns to its level before the load"); with --rounds N the load runs N times and
  RSS after each round is reported (growth round over round is a leak, not a cache);
- SIGTERM stops it (exit 143) within 60 s.
Writes benchmarks/results/soak.json (soak_<model>.json with --model). The server is always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from batch import make_prompts  # noqa: E402
from serve import (BenchError, _retrieved, _terminate_on_sigterm, client_of, commit, error_text, get_json,  # noqa: E402
                   rss_mib, start_gptcli, warm)

CYCLE = ("stream_chat", "chat", "stream_completion", "completion", "stream_chat", "chat", "stream_chat")
FINISHES = ("stop", "length")


@dataclass
class Result:
    index: int
    kind: str
    ok: bool = False
    problem: str | None = None
    finish_reason: str | None = None
    completion_tokens: int | None = None
    content_chunks: int = 0
    left_early: bool | None = None  # disconnects: closed before seeing the answer's finish
    seconds: float = 0.0


def kind_of(index: int, every: int) -> str:
    if every and index % every == every - 1:
        return "disconnect"
    return CYCLE[index % len(CYCLE)]


def check_answer(result: Result, text: str, max_tokens: int) -> str | None:
    """What is wrong with a completed answer, or None."""
    if result.finish_reason not in FINISHES:
        return f"finish_reason {result.finish_reason!r}"
    if result.completion_tokens is None:
        return "no usage"
    if not 0 <= result.completion_tokens <= max_tokens:
        return f"usage.completion_tokens {result.completion_tokens} outside 0..{max_tokens}"
    if not isinstance(text, str):
        return f"text is {type(text).__name__}"
    if result.completion_tokens > 0 and not text and result.finish_reason == "length":
        return f"{result.completion_tokens} tokens but no text"
    if result.completion_tokens == 0 and text:
        return "text but 0 tokens in usage"
    return None


async def one_request(client, model: str, index: int, kind: str, prompt: str, args) -> Result:
    result = Result(index, kind)
    started = time.perf_counter()
    messages = [{"role": "user", "content": prompt}]
    try:
        if kind == "chat":
            answer = await client.chat.completions.create(model=model, messages=messages,
                                                          max_tokens=args.max_tokens, temperature=0)
            if len(answer.choices) != 1:
                raise ValueError(f"{len(answer.choices)} choices")
            choice = answer.choices[0]
            result.finish_reason = choice.finish_reason
            result.completion_tokens = answer.usage.completion_tokens if answer.usage else None
            result.problem = check_answer(result, choice.message.content, args.max_tokens)
        elif kind == "completion":
            answer = await client.completions.create(model=model, prompt=prompt, max_tokens=args.max_tokens,
                                                     temperature=0)
            if len(answer.choices) != 1:
                raise ValueError(f"{len(answer.choices)} choices")
            choice = answer.choices[0]
            result.finish_reason = choice.finish_reason
            result.completion_tokens = answer.usage.completion_tokens if answer.usage else None
            result.problem = check_answer(result, choice.text, args.max_tokens)
        else:
            await streamed(client, model, kind, messages, prompt, args, result)
        result.ok = result.problem is None
    except Exception as exc:  # noqa: BLE001  (a failed request is a finding, the soak goes on)
        result.problem = error_text(exc)
    result.seconds = time.perf_counter() - started
    return result


async def streamed(client, model: str, kind: str, messages, prompt: str, args, result: Result) -> None:
    disconnect = kind == "disconnect"
    limit = args.disconnect_max_tokens if disconnect else args.max_tokens
    options = {"max_tokens": limit, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    if kind == "stream_completion":
        stream = await client.completions.create(model=model, prompt=prompt, **options)
    else:
        stream = await client.chat.completions.create(model=model, messages=messages, **options)
    ids, parts = set(), []
    async with stream:  # leaving the block closes the connection: how a client goes away
        async for chunk in stream:
            ids.add(chunk.id)
            if chunk.usage is not None:
                result.completion_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices:
                text = choice.text if kind == "stream_completion" else (choice.delta.content if choice.delta else None)
                if text:
                    parts.append(text)
                    result.content_chunks += 1
                if choice.finish_reason:
                    result.finish_reason = choice.finish_reason
            if disconnect and result.content_chunks >= args.disconnect_after:
                result.left_early = result.finish_reason is None
                break
    if disconnect:
        if result.left_early is None:  # the answer ended before the client meant to leave
            result.left_early = False
        return
    result.problem = check_answer(result, "".join(parts), limit)
    if result.problem is None and len(ids) != 1:
        result.problem = f"{len(ids)} different ids in one stream"


async def load(url: str, model: str, args, offset: int) -> tuple[list[Result], float, bool]:
    prompts = make_prompts(args.requests)
    results: list[Result | None] = [None] * args.requests
    next_index = 0

    async def one_client(client) -> None:
        nonlocal next_index
        while next_index < args.requests:
            index = next_index
            next_index += 1
            results[index] = await one_request(client, model, index, kind_of(index + offset, args.disconnect_every),
                                               prompts[index], args)

    timed_out = False
    async with client_of(url, args.request_timeout) as client:
        started = time.perf_counter()
        tasks = [asyncio.ensure_future(one_client(client)) for _ in range(min(args.concurrency, args.requests))]
        try:
            gathered = asyncio.gather(*tasks)
            gathered.add_done_callback(_retrieved)  # interrupted: no 'never retrieved' noise at exit
            await asyncio.wait_for(gathered, args.load_timeout)
        except asyncio.TimeoutError:
            timed_out = True
        wall = time.perf_counter() - started
    done = [r if r is not None else Result(i, kind_of(i + offset, args.disconnect_every),
                                           problem="not sent or cut off by --load-timeout")
            for i, r in enumerate(results)]
    return done, wall, timed_out


def health(url: str) -> dict:
    return get_json(url + "/health", timeout=10)


def wait_idle(url: str, seconds: float) -> tuple[dict, float]:
    """/health once nothing is in flight or waiting (or when ``seconds`` are up)."""
    started = time.perf_counter()
    while True:
        state = health(url)
        if state["requests"]["in_flight"] == 0 and state["requests"]["waiting"] == 0:
            return state, time.perf_counter() - started
        if time.perf_counter() - started > seconds:
            return state, time.perf_counter() - started
        time.sleep(0.25)


def settle_rss(pid: int, baseline: float, tolerance: float, seconds: float) -> list[float]:
    """RSS every 0.5 s until it is within tolerance of the baseline, or ``seconds`` are up."""
    samples = []
    deadline = time.perf_counter() + seconds
    while True:
        value = rss_mib(pid)
        if value is None:
            return samples
        samples.append(round(value, 1))
        if value <= baseline * (1 + tolerance) or time.perf_counter() >= deadline:
            return samples
        time.sleep(0.5)


def final_request(url: str, model: str, args) -> Result:
    async def run():
        async with client_of(url, args.request_timeout) as client:
            return await one_request(client, model, -1, "chat", "Say hi", args)
    return asyncio.run(run())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--disconnect-every", type=int, default=8, help="every N-th request leaves mid-stream (0: none)")
    parser.add_argument("--disconnect-after", type=int, default=3, help="content chunks read before leaving")
    parser.add_argument("--disconnect-max-tokens", type=int, default=512,
                        help="max_tokens of the leaving requests: long, so they leave before the end")
    parser.add_argument("--rounds", type=int, default=1, help="run the load this many times (RSS after each)")
    parser.add_argument("--rss-tolerance", type=float, default=0.10, help="allowed RSS growth over the baseline")
    parser.add_argument("--settle-s", type=float, default=20.0, help="longest wait for RSS to come back")
    parser.add_argument("--no-warm-burst", action="store_true",
                        help="baseline after sequential requests only (the batch's rows not yet used)")
    parser.add_argument("--request-timeout", type=float, default=300.0)
    parser.add_argument("--load-timeout", type=float, default=900.0, help="seconds for one round of the load")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.requests < 1 or args.concurrency < 1:
        parser.error("--rounds, --requests and --concurrency must be at least 1")
    args.level_timeout = args.load_timeout  # for serve.warm
    return args


def main(argv=None) -> int:
    _terminate_on_sigterm()
    args = parse_args(argv)
    out = Path(args.out) if args.out else HERE / "results" / (
        "soak.json" if args.model is None else f"soak_{Path(args.model).name or 'model'}.json")
    summary: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **commit(), "cpus": os.cpu_count(),
                     "load_average_at_start": os.getloadavg()[0], "model": args.model or "default",
                     "requests": args.requests, "concurrency": args.concurrency, "max_tokens": args.max_tokens,
                     "disconnect_every": args.disconnect_every, "disconnect_after_chunks": args.disconnect_after,
                     "disconnect_max_tokens": args.disconnect_max_tokens, "rounds": args.rounds,
                     "rss_tolerance": args.rss_tolerance}
    checks: list[dict] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"check": name, "ok": bool(ok), "detail": detail})
        print(f"  [{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)

    with tempfile.TemporaryDirectory(prefix="gptcli-soak-") as tmp:
        server = None
        try:
            print("starting gptcli serve ...", flush=True)
            server = start_gptcli(args.model, args.dtype, args.batch_size, max(64, 2 * args.concurrency),
                                  Path(tmp) / "serve.log")
            url, model = server.url, server.model
            rss = summary["rss_mib"] = {"idle": rss_mib(server.pid)}
            print(f"  ready in {server.start_s:.1f} s on {url} (model {model}); RSS idle {rss['idle']:.0f} MiB",
                  flush=True)
            warm(server, args, sequential=4, burst=0)
            rss["after_sequential_warmup"] = rss_mib(server.pid)
            if not args.no_warm_burst:
                warm(server, args, sequential=0, burst=args.concurrency)
                rss["after_burst_warmup"] = rss_mib(server.pid)
            baseline = rss.get("after_burst_warmup", rss["after_sequential_warmup"])
            rss["baseline"] = baseline
            before, _ = wait_idle(url, 60)
            print(f"  baseline RSS {baseline:.0f} MiB; health {before['requests']}", flush=True)

            results: list[Result] = []
            rss["after_each_round"] = []
            summary["rounds_s"] = []
            for round_number in range(args.rounds):
                got, wall, timed_out = asyncio.run(load(url, model, args, offset=round_number * args.requests))
                results += got
                summary["rounds_s"].append(wall)
                idle, waited = wait_idle(url, 60)
                rss["after_each_round"].append(rss_mib(server.pid))
                print(f"  round {round_number + 1}: {len(got)} requests in {wall:.1f} s"
                      f"{' (TIMED OUT)' if timed_out else ''}; idle after {waited:.1f} s; "
                      f"RSS {rss['after_each_round'][-1]:.0f} MiB", flush=True)
                if timed_out:
                    break
            after = idle

            kept = [r for r in results if r.kind != "disconnect"]
            bad = [r for r in kept if not r.ok]
            leavers = [r for r in results if r.kind == "disconnect"]
            early = [r for r in leavers if r.left_early]
            summary["kinds"] = {k: sum(r.kind == k for r in results) for k in sorted({r.kind for r in results})}
            summary["tokens"] = sum(r.completion_tokens or 0 for r in kept)
            summary["disconnects"] = {"requests": len(leavers), "left_before_the_end": len(early),
                                      "failed_before_leaving": [r.problem for r in leavers if r.problem][:5]}
            summary["problems"] = [asdict(r) for r in bad][:10]
            check("answers", not bad and len(kept) > 0,
                  f"{len(kept) - len(bad)} of {len(kept)} non-leaving requests valid"
                  + (f"; first problems: {sorted({r.problem for r in bad})[:3]}" if bad else ""))
            check("leaving clients", not any(r.problem for r in leavers),
                  f"{len(leavers)} left after {args.disconnect_after} chunks, {len(early)} before their answer "
                  f"ended" + (f"; errors {[r.problem for r in leavers if r.problem][:3]}"
                              if any(r.problem for r in leavers) else ""))
            counts_before, counts_after = before["requests"], after["requests"]
            delta = {k: counts_after[k] - counts_before[k] for k in ("finished", "cancelled", "failed")}
            summary["health_before"], summary["health_after"], summary["health_delta"] = before, after, delta
            check("health idle", counts_after["in_flight"] == 0 and counts_after["waiting"] == 0,
                  f"in_flight {counts_after['in_flight']}, waiting {counts_after['waiting']}")
            check("health failed", counts_after["failed"] == 0, f"failed {counts_after['failed']} in all")
            check("health accounting", delta["finished"] + delta["cancelled"] == len(results),
                  f"finished {delta['finished']} + cancelled {delta['cancelled']} = "
                  f"{delta['finished'] + delta['cancelled']} for {len(results)} requests")
            check("health cancelled", len(early) <= delta["cancelled"] <= len(leavers),
                  f"cancelled {delta['cancelled']}; clients that left before the end {len(early)}, "
                  f"disconnects {len(leavers)}")
            last = final_request(url, model, args)
            state = health(url)
            check("still up", last.ok and state["status"] == "ok" and server.alive(),
                  f"final request {'ok' if last.ok else last.problem}; /health status {state['status']!r}")
            samples = settle_rss(server.pid, baseline, args.rss_tolerance, args.settle_s)
            rss["settle_samples"] = samples
            rss["after_load"] = final = samples[-1] if samples else None
            rss["peak_hwm"] = hwm_mib(server.pid)
            growth = (final - baseline) / baseline if final is not None else None
            rss["growth_vs_baseline"] = growth
            rss["growth_vs_idle"] = (final - rss["idle"]) / rss["idle"] if final is not None else None
            rounds_text = ", ".join(f"{v:.0f}" for v in rss["after_each_round"] if v is not None)
            check("memory", growth is not None and growth <= args.rss_tolerance,
                  f"RSS idle {rss['idle']:.0f} MiB, baseline {baseline:.0f} MiB, after each round {rounds_text} MiB, "
                  f"after settling {final if final is not None else float('nan'):.0f} MiB "
                  f"({100 * (growth or 0):+.1f}%, allowed +{100 * args.rss_tolerance:.0f}%), peak {rss['peak_hwm']} MiB")
        except BenchError as error:
            check("server", False, str(error))
        finally:
            if server is not None:
                code = server.stop()
                summary["exit_code"], summary["stop_s"] = code, server.stop_s
                check("SIGTERM stop", code == 143, f"exit {code} in {server.stop_s or 0:.1f} s")
                if code != 143:
                    summary["log_tail"] = server.log_tail()
    summary["checks"] = checks
    summary["passed"] = all(c["ok"] for c in checks)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    failed = [c["check"] for c in checks if not c["ok"]]
    print(f"soak: {'PASSED' if not failed else 'FAILED: ' + ', '.join(failed)} "
          f"({len(checks) - len(failed)} of {len(checks)} checks); wrote {out}")
    return 0 if not failed else 1


def hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("soak interrupted (the server it started is stopped)", file=sys.stderr)
        sys.exit(130)
