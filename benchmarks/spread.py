"""`--num-processes N` against one process, on public text: the same records, and the wall time.

    python benchmarks/spread.py [--processes 2] [--texts 1242]

On a 2-core CPU this is a correctness check, not a speed-up: two processes share the two cores that one
process's two threads already used. The speed-up belongs to GPUs (a model per GPU) and machines.
Runs, each as a user would (whole process, wall time):

1. ``gptcli embed`` (packaged all-MiniLM-L6-v2) of the ``text`` field of the public sets in
   benchmarks/data/public (SST-2, UCI reviews, AG News, DBpedia) into a .npy, with 1 and with N processes;
2. ``gptcli classify`` (MiniLM, the SST-2 labels) of the same texts into a .jsonl, with 1 and with N;
3. ``gptcli generate`` (the default SmolLM2, greedy, 32 new tokens) of "Continue this text: ..." for the first
   24 English sentences of the public Tatoeba en-ro test set, in bf16 (the default here) and float32.

Compares the N-process files with the one-process ones (records in order; how many identical; the largest
difference: a batch of other texts rounds differently, see README "Batch invariance"), and writes
benchmarks/results/spread.txt. classify runs in its default dtype (bf16 on CPUs that have it) and in float32.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import provenance  # noqa: E402

GPTCLI = str(Path(sys.executable).parent / "gptcli")
SETS = ("sst2", "uci_reviews", "ag_news", "dbpedia14")


def public_texts(limit: int) -> list[str]:
    texts = []
    for name in SETS:
        for path in sorted((HERE / "data" / "public" / name).glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                texts.append(" ".join(json.loads(line)["text"].split()))
    return texts[:limit]


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([GPTCLI, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: gptcli {' '.join(args)}\n{done.stderr}")
    return time.perf_counter() - started


def compare(name: str, command: list[str], suffix: str, processes: int, folder: Path, differences) -> str:
    one, many = folder / f"{name}-1{suffix}", folder / f"{name}-{processes}{suffix}"
    seconds_one = timed([*command, "--output", str(one)])
    seconds_many = timed([*command, "--output", str(many), "--num-processes", str(processes)])
    shown = " ".join(command[:1] + [arg for arg in command[1:] if arg.startswith("--dtype") or arg == "float32"])
    return (f"| `{shown}` | {seconds_one:.1f} s | {seconds_many:.1f} s | {seconds_one / seconds_many:.2f}x | "
            f"{differences(one, many)} |")


def array_differences(one: Path, many: Path) -> str:
    import numpy

    a, b = numpy.load(one), numpy.load(many)
    differ = int((a != b).any(axis=1).sum())
    return f"{len(a) - differ} of {len(a)} rows identical; largest difference {abs(a - b).max():.1e}"


def record_differences(one: Path, many: Path) -> str:
    a = [json.loads(line) for line in one.read_text(encoding="utf-8").splitlines()]
    b = [json.loads(line) for line in many.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in a] == [r["id"] for r in b], "records out of order"
    same = sum(x == y for x, y in zip(a, b))
    labels = sum(x["label"] == y["label"] for x, y in zip(a, b))
    gap = max(abs(x["scores"][k] - y["scores"][k]) for x, y in zip(a, b) for k in x["scores"])
    return f"{same} of {len(a)} records identical, {labels} labels equal; largest score difference {gap:.1e}"


def text_differences(one: Path, many: Path) -> str:
    a = [json.loads(line) for line in one.read_text(encoding="utf-8").splitlines()]
    b = [json.loads(line) for line in many.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in a] == [r["id"] for r in b], "records out of order"
    return f"{sum(x['text'] == y['text'] for x, y in zip(a, b))} of {len(a)} greedy texts identical"


def prompts(folder: Path, count: int = 24) -> Path:
    lines = (HERE / "data" / "public" / "tatoeba_en_ro" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": n, "prompt": "Continue this text: " + json.loads(line)["text"]}) + "\n"
                            for n, line in enumerate(lines[:count])), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--texts", type=int, default=1242)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gptcli-spread-") as folder:
        folder = Path(folder)
        texts = public_texts(args.texts)
        source = folder / "texts.txt"
        source.write_text("\n".join(texts) + "\n", encoding="utf-8")
        classify = ["classify", "--input", str(source), "--labels", "negative,positive"]
        rows = [f"| command ({len(texts)} public texts) | 1 process | {args.processes} processes | ratio | "
                f"{args.processes} processes against 1 |", "|---|---|---|---|---|",
                compare("embed", ["embed", "--input", str(source)], ".npy", args.processes, folder,
                        array_differences),
                compare("classify", classify, ".jsonl", args.processes, folder, record_differences),
                compare("classify32", [*classify, "--dtype", "float32"], ".jsonl", args.processes, folder,
                        record_differences)]
        generate = ["generate", "--input", str(prompts(folder)), "--max-new-tokens", "32"]
        rows += [compare("generate", generate, ".jsonl", args.processes, folder, text_differences),
                 compare("generate32", [*generate, "--dtype", "float32"], ".jsonl", args.processes, folder,
                         text_differences)]
    report = "\n".join([*rows, "", provenance.stamp(), provenance.machine(), provenance.versions()])
    print(report)
    (HERE / "results" / "spread.txt").write_text(report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
