"""Embedding throughput on the packaged all-MiniLM-L6-v2: gptcli against plain transformers and sentence-transformers.

    python benchmarks/embed.py [--texts 2484] [--rounds 6] [--batch-size 32]

Benchmark-only install (NOT a dependency of gptcli):

    .venv/bin/pip install sentence-transformers==6.2.0
    # or, to keep the venv as it is: pip install --target /tmp/st-bench --no-deps sentence-transformers==6.2.0 \
    #   scikit-learn scipy threadpoolctl narwhals   and run with PYTHONPATH=/tmp/st-bench

The texts are the ``text`` field of every row of the public sets in benchmarks/data/public (SST-2, UCI
reviews, AG News, DBpedia: 1,242 texts of 3 to 186 tokens, mean 31), repeated in order up to ``--texts``
(2,484 by default: each twice).
Three contenders, each in a process of its own, float32 on the CPU, the same model folder, the same texts
and batch size:

1. ``gptcli embed --input texts.txt --output out.npy --stats``, as a user runs it (sorts by token length
   within windows of 1,024 texts, writes in input order);
2. a plain transformers script as a user writes it from the model card: batches in input order, mean
   pooling over the attention mask, L2 normalisation;
3. sentence-transformers' ``SentenceTransformer(folder).encode(texts, batch_size=...)`` (sorts by length).

Each reports texts/s of its embedding work (after imports and load) and of the whole process, and its own
CPU time and peak RSS (wait4). Other processes on a shared machine only ever slow a run down, so the rounds
are interleaved (each round starting with the next contender) and the best round of each contender is the
figure; the median is kept beside it. Every
text's vector from gptcli is compared with sentence-transformers' (and the plain script's) by cosine.
Writes benchmarks/results/embed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GPTCLI = str(Path(sys.executable).parent / "gptcli")
SETS = ("sst2", "uci_reviews", "ag_news", "dbpedia14")

PLAIN = r'''
import json, sys, time
import numpy, torch
from transformers import AutoModel, AutoTokenizer
folder, source, out, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
texts = open(source, encoding="utf-8").read().split("\n")[:-1]
tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
started = time.perf_counter()
chunks = []
with torch.no_grad():
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=256,
                          return_tensors="pt")
        hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
vectors = numpy.concatenate(chunks)
seconds = time.perf_counter() - started
numpy.save(out, vectors)
print(json.dumps({"work_seconds": seconds}))
'''

SENTENCE_TRANSFORMERS = r'''
import json, sys, time
import numpy
from sentence_transformers import SentenceTransformer
folder, source, out, batch_size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
texts = open(source, encoding="utf-8").read().split("\n")[:-1]
model = SentenceTransformer(folder, device="cpu")
started = time.perf_counter()
vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True)
seconds = time.perf_counter() - started
numpy.save(out, vectors)
print(json.dumps({"work_seconds": seconds}))
'''


def public_texts() -> list[str]:
    texts = []
    for name in SETS:
        for split in ("test", "train"):
            for line in (HERE / "data" / "public" / name / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
                texts.append(" ".join(json.loads(line)["text"].split()))  # one line each
    return texts


def run_child(command: list[str]) -> tuple[str, str, float, float, float]:
    """Run a command; its stdout, stderr, wall seconds, CPU seconds and peak RSS in MiB (from wait4)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{command[:3]} failed:\n{stderr[-2000:]}")
        return stdout, stderr, seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_gptcli(source: Path, out: Path, batch_size: int) -> dict:
    out.unlink(missing_ok=True)
    Path(str(out) + ".gptcli.json").unlink(missing_ok=True)
    _stdout, stderr, wall, cpu, rss = run_child([GPTCLI, "embed", "--input", str(source), "--output", str(out),
                                                 "--batch-size", str(batch_size), "--stats"])
    work = re.search(r"(\d+) texts, \d+ tok in ([\d.]+) s", stderr)
    return {"work_seconds": float(work.group(2)), "wall_seconds": wall, "cpu_seconds": cpu, "peak_rss_mib": rss}


def run_script(script: str, folder: str, source: Path, out: Path, batch_size: int) -> dict:
    stdout, _stderr, wall, cpu, rss = run_child([sys.executable, "-c", script, folder, str(source), str(out),
                                                 str(batch_size)])
    return {**json.loads(stdout.strip().splitlines()[-1]), "wall_seconds": wall, "cpu_seconds": cpu,
            "peak_rss_mib": rss}


def cosines(a, b):
    import numpy

    return (a * b).sum(1) / (numpy.linalg.norm(a, axis=1) * numpy.linalg.norm(b, axis=1))


def versions() -> dict:
    import importlib.metadata as md

    names = ("gptcli", "torch", "transformers", "tokenizers", "sentence-transformers", "numpy")
    return {name: md.version(name) for name in names}


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} CPU cores ({model}), {platform.system()} {platform.release()}"


def summary(runs: list[dict], texts: int) -> dict:
    best = min(runs, key=lambda run: run["work_seconds"])
    return {"texts_per_s": texts / best["work_seconds"],
            "texts_per_s_median": texts / statistics.median(run["work_seconds"] for run in runs),
            "texts_per_s_whole_process": texts / min(run["wall_seconds"] for run in runs),
            "cpu_seconds_whole_process_min": min(run["cpu_seconds"] for run in runs),
            "peak_rss_mib": max(run["peak_rss_mib"] for run in runs), "rounds": runs}


def main() -> None:
    import numpy

    from gptcli.models.resolve import packaged_minilm_folder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2484)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    folder = str(packaged_minilm_folder())
    base = public_texts()
    texts = (base * (args.texts // len(base) + 1))[:args.texts]
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "texts.txt"
        source.write_text("\n".join(texts) + "\n", encoding="utf-8")
        contenders = {
            "gptcli": lambda: run_gptcli(source, work / "gptcli.npy", args.batch_size),
            "plain_transformers": lambda: run_script(PLAIN, folder, source, work / "plain.npy", args.batch_size),
            "sentence_transformers": lambda: run_script(SENTENCE_TRANSFORMERS, folder, source, work / "st.npy",
                                                        args.batch_size),
        }
        names = list(contenders)
        runs: dict[str, list[dict]] = {name: [] for name in names}
        for round_ in range(args.rounds):
            # Each round starts with another contender, so none is always first after an idle spell.
            for name in names[round_ % 3:] + names[:round_ % 3]:
                runs[name].append(contenders[name]())
            print(f"round {round_ + 1}: " + ", ".join(f"{name} {len(texts) / r[-1]['work_seconds']:.1f} texts/s"
                                                      for name, r in runs.items()), file=sys.stderr)
        ours, plain, st = (numpy.load(work / name) for name in ("gptcli.npy", "plain.npy", "st.npy"))
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": machine(), "load_average_at_start": load,
        "versions": versions(), "model": "all-MiniLM-L6-v2 (packaged, float32)", "texts": len(texts),
        "distinct_texts": len(base), "batch_size": args.batch_size,
        "text_source": "benchmarks/data/public/{" + ",".join(SETS) + "}/{test,train}.jsonl, field text",
        **{name: summary(r, len(texts)) for name, r in runs.items()},
        "min_cosine_gptcli_vs_sentence_transformers": float(cosines(ours, st).min()),
        "min_cosine_gptcli_vs_plain_transformers": float(cosines(ours, plain).min()),
        "max_abs_difference_gptcli_vs_sentence_transformers": float(numpy.abs(ours - st).max()),
    }
    result["ratio_vs_sentence_transformers"] = (result["gptcli"]["texts_per_s"]
                                                / result["sentence_transformers"]["texts_per_s"])
    result["ratio_vs_plain_transformers"] = (result["gptcli"]["texts_per_s"]
                                             / result["plain_transformers"]["texts_per_s"])
    path = HERE / "results" / "embed.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({key: value for key, value in result.items() if not isinstance(value, dict)}, indent=2))
    for name in runs:
        print(f"{name}: {result[name]['texts_per_s']:.1f} texts/s (median {result[name]['texts_per_s_median']:.1f}), "
              f"peak RSS {result[name]['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
