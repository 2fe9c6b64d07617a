"""Hand-run: would classify's causal-LM path gain from generating under a --choice constraint?

For each text the prompt is classify's own (LabelScorer.prompt_ids: the labels listed, the
answer prefix), then two ways to answer it:
- scoring (classify today): every label's mean log-probability as the continuation, minus its
  score on neutral texts (calibration);
- choice: greedy generation constrained to exactly one of the labels (engine.constraints) —
  one prefill and a few decode steps, but it reads only the path greedy decoding takes and
  cannot be calibrated.
Accuracy and seconds on the train splits (tuning data), default model. Writes
benchmarks/results/classify_choice.txt.

    .venv/bin/python benchmarks/classify_choice.py --sets sst2,ag_news --limit 100
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT / "benchmarks" / "data" / "public"
RESULT = ROOT / "benchmarks" / "results" / "classify_choice.txt"


def rows_of(name: str, limit: int) -> list[dict]:
    with open(DATA / name / "train.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle][:limit]


def by_scoring(lm, rows, labels) -> tuple[list[str], float]:
    from gptcli.services.classify import ClassifyParams, classify

    started = time.perf_counter()
    results = list(classify(lm, [r["text"] for r in rows], ClassifyParams(labels=labels, batch_size=8)))
    return [r.label for r in results], time.perf_counter() - started


def by_choice(lm, rows, labels) -> tuple[list[str], float]:
    from gptcli.engine import constraints
    from gptcli.engine.api import Finished, Request
    from gptcli.engine.scheduler import Scheduler
    from gptcli.services.classify import ClassifyParams
    from gptcli.services.classify_lm import LabelScorer

    started = time.perf_counter()
    scorer = LabelScorer(lm, labels, ClassifyParams(labels=labels, calibrate=False))
    # After the answer prefix ("Label:") a label is spoken with a leading space, as scoring reads it.
    spoken = [scorer._spoken(label) for label in labels]
    constraint = constraints.choice(spoken)
    engine = Scheduler(lm, 8)
    for index, row in enumerate(rows):
        engine.submit(Request(index, tuple(scorer.prompt_ids(row["text"], "text")), 16, constraint=constraint))
    answers = {}
    while engine.has_work():
        for event in engine.step():
            if isinstance(event, Finished):
                answers[event.request_id] = labels[spoken.index(event.text)] if event.text in spoken else None
    return [answers[i] for i in range(len(rows))], time.perf_counter() - started


def main() -> None:
    from collections import Counter

    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM

    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", default="sst2,ag_news")
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    lm = load_model(LoadOptions(None), accept=(CAUSAL_LM,), command="classify")
    lines = [f"# classify_choice.py, {datetime.date.today()}, {platform.machine()}, default model, "
             f"train splits, first {args.limit} rows", ""]
    for name in args.sets.split(","):
        rows = rows_of(name, args.limit)
        labels = tuple(sorted({r["label"] for r in rows}))
        for method, run in (("scoring (calibrated)", by_scoring), ("choice (greedy)", by_choice)):
            predicted, seconds = run(lm, rows, labels)
            correct = sum(p == r["label"] for p, r in zip(predicted, rows))
            share = max(Counter(predicted).values()) / len(rows)
            line = (f"{name:10} {method:22} accuracy {correct / len(rows):6.1%}  largest label share {share:5.1%}  "
                    f"{seconds:6.1f} s for {len(rows)} texts")
            print(line, flush=True)
            lines.append(line)
    RESULT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
