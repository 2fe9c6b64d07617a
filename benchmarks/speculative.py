"""Single-stream decode with and without prompt-lookup speculation (engine/speculative.py), default model.

Three workloads, one prompt at a time, greedy: a story (little to copy), one-sentence summaries of
public news articles (XSum train split, the summarize command's own instruction and stop), and a
copy-edit of the same articles (most of the answer is in the prompt). For each: generated tokens per
second of decoding with GPTCLI_SPECULATE=0 and =1 in the same run (medians of alternated repeats),
the share of guessed tokens the model kept, and how many outputs are identical. Run on an idle machine:

    python benchmarks/speculative.py [--dtype bfloat16|int4] [--docs 10] [--reference]

--reference also compares both runs' outputs with float32's: speculation feeds several tokens to one
pass, so bf16 rounding differs from plain steps; the question is whether it strays further from float32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STORY = "Write a short story about a lighthouse keeper."
EDIT = "Correct any spelling or grammar mistakes in the text below and return the whole text.\n\n{text}"


def workloads(docs: int) -> dict[str, list[tuple[str, int, tuple[str, ...]]]]:
    from gptcli.services.summarize import FINAL_INSTRUCTION, STOP

    rows = (HERE / "data" / "public" / "xsum" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:docs]
    texts = [json.loads(row)["text"][:1500] for row in rows]
    return {"story": [(STORY, 128, ())],
            "summarize": [(FINAL_INSTRUCTION.format(text=t, wording="in one sentence"), 64, STOP) for t in texts],
            "copy-edit": [(EDIT.format(text=t), 160, ()) for t in texts]}


def run(lm, prompts, guess: bool) -> tuple[float, list[str], int, int]:
    from gptcli.engine import speculative
    from gptcli.services import generate as gen
    from gptcli.services.prompting import Fitted, Prompt, encode_prompt

    os.environ[speculative.DISABLE] = "1" if guess else "0"
    stats = gen.GenerationStats()
    texts = []
    for prompt, tokens, stop in prompts:
        ids = encode_prompt(lm.tokenizer, Prompt(text=prompt))
        params = gen.GenerationParams(stop=stop)
        texts += [c.text for c in gen.generate(lm, [Fitted(ids, tokens)], params, stats=stats)]
    return stats.generated_tokens / stats.decode_seconds, texts, stats.drafted_tokens, stats.accepted_tokens


def agreement(texts: list[str], references: list[str]) -> dict:
    """How close outputs are to float32's: identical ones, and the characters they share from the start."""
    shared = 0
    for text, reference in zip(texts, references):
        shared += next((i for i, (a, b) in enumerate(zip(text, reference)) if a != b), min(len(text), len(reference)))
    return {"identical": sum(t == r for t, r in zip(texts, references)),
            "shared_prefix": round(shared / max(1, sum(len(r) for r in references)), 4)}


def float32_references(prompt_sets: dict) -> dict[str, list[str]]:
    """Each workload's greedy outputs in float32 (plain steps): what bf16 outputs are compared with."""
    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM

    reference = load_model(LoadOptions(None, dtype="float32"), accept=(CAUSAL_LM,), command="bench")
    return {name: run(reference, prompts, False)[1] for name, prompts in prompt_sets.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--docs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", action="store_true",
                        help="also compare both outputs with float32's (a second load and run)")
    args = parser.parse_args()
    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM

    prompt_sets = workloads(args.docs)
    references = float32_references(prompt_sets) if args.reference else None
    lm = load_model(LoadOptions(None, dtype=args.dtype), accept=(CAUSAL_LM,), command="bench")
    dtype = "int4" if getattr(lm.placement, "int4", False) else lm.placement.dtype_name
    results = {"dtype": dtype, "machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")}
    run(lm, [(STORY, 16, ())], True)  # warm-up
    for name, prompts in prompt_sets.items():
        plains, guesses = [], []
        for _ in range(args.repeats):  # alternated: a drift of the machine's speed hits both alike
            plains.append(run(lm, prompts, False))
            guesses.append(run(lm, prompts, True))
        plain_tps = statistics.median(r[0] for r in plains)
        guess_tps = statistics.median(r[0] for r in guesses)
        plain_texts, (_, guess_texts, drafted, accepted) = plains[0][1], guesses[0]
        same = sum(a == b for a, b in zip(plain_texts, guess_texts))
        results[name] = {"prompts": len(prompts), "plain_tok_s": round(plain_tps, 1),
                         "speculative_tok_s": round(guess_tps, 1), "speedup": round(guess_tps / plain_tps, 2),
                         "drafted": drafted, "accepted": accepted, "identical_outputs": same}
        if references is not None:
            results[name]["plain_vs_float32"] = agreement(plain_texts, references[name])
            results[name]["speculative_vs_float32"] = agreement(guess_texts, references[name])
            print(f"{'':10} against float32: plain {results[name]['plain_vs_float32']}, "
                  f"speculative {results[name]['speculative_vs_float32']}", flush=True)
        print(f"{name:10} plain {plain_tps:6.1f} tok/s  speculative {guess_tps:6.1f} tok/s  "
              f"({guess_tps / plain_tps:.2f}x)  kept {accepted}/{drafted} guessed  identical {same}/{len(prompts)}",
              flush=True)
    out = HERE / "results" / f"speculative_{results['dtype']}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
