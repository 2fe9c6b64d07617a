"""Hand-run: classify zero-shot and few-shot (--examples) on the public held-out sets, both packaged models.

For each classify set in benchmarks/data/public (test.jsonl held out), runs the real command
`gptcli eval classify --data test.jsonl --json` with the packaged MiniLM (classify's default) and
with SmolLM2 (`--model smollm2`), first zero-shot, then with `--examples` drawn from the set's
train.jsonl: up to K per label (default 8; DBpedia's sample holds 3 per label), chosen with a fixed
seed, so the examples never come from the rows scored. Prints a markdown table and writes it to
benchmarks/results/classify_fewshot_run.txt.

    .venv/bin/python benchmarks/classify_fewshot.py
    .venv/bin/python benchmarks/classify_fewshot.py --models minilm --per-label 4 --sets sst2,ag_news
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data" / "public"
RESULT = ROOT / "benchmarks" / "results" / "classify_fewshot_run.txt"
GPTCLI = ROOT / ".venv" / "bin" / "gptcli"
SETS = ("sst2", "uci_reviews", "ag_news", "dbpedia14")


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def draw_examples(name: str, per_label: int, seed: int) -> list[dict]:
    """Up to ``per_label`` train rows of each label, in a seeded order."""
    train = rows(DATA / name / "train.jsonl")
    random.Random(seed).shuffle(train)
    taken: Counter = Counter()
    chosen = []
    for row in train:
        if taken[row["label"]] < per_label:
            taken[row["label"]] += 1
            chosen.append({"text": row["text"], "label": row["label"]})
    return chosen


def evaluate(name: str, model: str, examples: list[dict] | None) -> dict:
    command = [str(GPTCLI), "eval", "classify", "--data", str(DATA / name / "test.jsonl"), "--json",
               "--model", model]
    with tempfile.TemporaryDirectory() as folder:
        if examples:
            path = Path(folder) / "examples.jsonl"
            path.write_text("".join(json.dumps(row) + "\n" for row in examples), encoding="utf-8")
            command += ["--examples", str(path)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def top_share(report: dict) -> float:
    """The share of predictions that went to the most predicted label (1.0 = collapsed onto one)."""
    matrix = report["confusion"]["matrix"]
    columns = [sum(row[j] for row in matrix) for j in range(len(matrix[0]))]
    return max(columns) / sum(columns)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="minilm,smollm2")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--per-label", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    lines = ["| set | rows | model | zero-shot acc (macro-F1, top-label share) | "
             f"--examples ≤{args.per_label}/label acc (macro-F1, top-label share) | examples |",
             "|---|---|---|---|---|---|"]
    for name in args.sets.split(","):
        examples = draw_examples(name, args.per_label, args.seed)
        for model in args.models.split(","):
            cells = []
            for shown in (None, examples):
                report = evaluate(name, model, shown)
                cells.append(f"{report['accuracy']:.3f} ({report['macro_f1']:.3f}, {top_share(report):.2f})")
            total = sum(sum(row) for row in report["confusion"]["matrix"])
            lines.append(f"| {name} | {total} | {model} | {cells[0]} | {cells[1]} | {len(examples)} |")
            print(lines[-1], flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    RESULT.write_text("\n".join(lines) + f"\n\ndate: {stamp}; commit {commit}; seed {args.seed}\n", encoding="utf-8")
    print(f"written to {RESULT}", file=sys.stderr)


if __name__ == "__main__":
    main()
