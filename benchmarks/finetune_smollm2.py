"""A real fine-tuning run: SmolLM2-135M + LoRA on examples/chat.jsonl, on CPU.

Shows that eval loss falls and that greedy answers to the training questions
follow the trained answers more closely than before (difflib similarity, 0..1).

    python benchmarks/finetune_smollm2.py [--steps 40] [--output /tmp/brightleaf]
"""

from __future__ import annotations

import argparse
import difflib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "chat.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--output", default="/tmp/gptcli-bench-brightleaf")
    args = parser.parse_args()
    pairs = _pairs()[::6]  # every sixth question: eight, all from the training file
    before = _answers(None, pairs)
    seconds = _finetune(args.output, args.steps)
    after = _answers(args.output, pairs)
    _report(args, pairs, before, after, seconds)


def _pairs() -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows]


def _finetune(output: str, steps: int) -> float:
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "gptcli", "finetune", "--data", str(DATA), "--output", output,
               "--max-steps", str(steps), "--batch-size", "4", "--learning-rate", "1e-3", "--lora-r", "16",
               "--lora-alpha", "32", "--eval-every", "10", "--log-every", "5", "--max-length", "128"]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def _answers(model: str | None, pairs: list[tuple[str, str]]) -> list[str]:
    import torch

    from gptcli.models import load_model
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.models.loader import LoadOptions

    lm = load_model(LoadOptions(model, device="cpu", dtype="float32"), accept=(CAUSAL_LM,), command="bench")
    answers = []
    for question, _ in pairs:
        ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            out = lm.model.generate(ids, max_new_tokens=32, do_sample=False)
        answers.append(lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return answers


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def _report(args, pairs, before, after, seconds) -> None:
    metrics = [json.loads(line) for line in (Path(args.output) / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if "eval_loss" in m]
    steps = [m for m in metrics if "loss" in m]
    sim_before = sum(_similarity(a, t) for a, (_, t) in zip(before, pairs)) / len(pairs)
    sim_after = sum(_similarity(a, t) for a, (_, t) in zip(after, pairs)) / len(pairs)
    exact = sum(a.strip() == t.strip() for a, (_, t) in zip(after, pairs))
    for (question, target), old, new in zip(pairs, before, after):
        print(f"Q: {question}\n  trained: {target}\n  before:  {old[:100]}\n  after:   {new[:100]}")
    summary = {"steps": len(steps), "wall_seconds_incl_load_and_save": round(seconds, 1),
               "train_tokens_per_second": steps[-1]["tokens_per_second"],
               "train_loss_first": round(steps[0]["loss"], 4), "train_loss_last": round(steps[-1]["loss"], 4),
               "eval_loss_before": round(evals[0]["eval_loss"], 4), "eval_loss_best": round(min(e["eval_loss"] for e in evals), 4),
               "similarity_before": round(sim_before, 3), "similarity_after": round(sim_after, 3),
               "exact_answers_after": f"{exact}/{len(pairs)}"}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
