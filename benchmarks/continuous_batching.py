"""Continuous batching against the fixed batches it replaced, on outputs of very different lengths.

    python benchmarks/continuous_batching.py [--prompts 256] [--dtype auto] [--baseline-rev b966967]

Each prompt gets its own token limit, spread from 8 to 256, and ends earlier where the model
stops by itself, so a fixed batch keeps decoding rows that are done until its longest row ends.
Both runs go through ``services.generate.generate`` with the batch size and token budget the
CLI chooses (``auto_batch_size``, ``batch_token_budget``), greedy, on the default model:
- "fixed": the code at ``--baseline-rev`` (length-sorted fixed batches), checked out in a
  temporary git worktree and imported in a process of its own;
- "continuous": this tree (the engine's scheduler).
Prints and writes benchmarks/results/continuous_batching.json: wall seconds, generated
tokens/s, and how many texts are identical. Run it on an idle machine.
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
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from batch import make_prompts  # noqa: E402  (the prompts of the batch benchmark)


def limits(count: int) -> list[int]:
    """Token limits spread evenly over 8..256 in a shuffled but fixed order."""
    return [8 + (i * 97) % 249 for i in range(count)]


def child(args) -> None:
    """Run one generation job with the gptcli of ``args.source``; print a JSON summary."""
    sys.path.insert(0, args.source)
    import gptcli
    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.services import generate as gen
    from gptcli.services.batching import auto_batch_size, batch_token_budget
    from gptcli.services.prompting import Fitted, Prompt, encode_prompt

    lm = load_model(LoadOptions(args.model, dtype=args.dtype), accept=(CAUSAL_LM,), command="generate")
    prompts = make_prompts(args.prompts)
    fitted = [Fitted(encode_prompt(lm.tokenizer, Prompt(text=p)), n) for p, n in zip(prompts, limits(len(prompts)))]
    longest = max(len(f.ids) + f.max_new_tokens for f in fitted)
    params = gen.GenerationParams(batch_size=auto_batch_size(lm, longest), max_batch_tokens=batch_token_budget(lm))
    started = time.perf_counter()
    results = [e for e in gen.generate(lm, fitted, params) if isinstance(e, gen.Completion)]
    seconds = time.perf_counter() - started
    tokens = sum(c.generated_tokens for c in results)
    json.dump({"code": args.child, "package": gptcli.__file__, "seconds": seconds, "generated_tokens": tokens, "tokens_per_s": tokens / seconds,
               "batch_size": params.batch_size, "max_batch_tokens": params.max_batch_tokens,
               "texts": [c.text for c in results],
               "length_stops": sum(c.finish_reason == "length" for c in results)}, sys.stdout)


def run_child(code: str, source: Path, args) -> dict:
    command = [sys.executable, str(HERE / "continuous_batching.py"), "--child", code, "--source", str(source),
               "--prompts", str(args.prompts), "--dtype", args.dtype]
    if args.model:
        command += ["--model", args.model]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=source).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--model", default=None)
    parser.add_argument("--baseline-rev", default="b966967")
    parser.add_argument("--child", choices=["fixed", "continuous"])
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), args.baseline_rev],
                       check=True, capture_output=True)
        try:
            fixed = run_child("fixed", worktree, args)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False)
    continuous = run_child("continuous", REPO, args)
    same = sum(a == b for a, b in zip(fixed["texts"], continuous["texts"]))
    summary = {"prompts": args.prompts, "dtype": args.dtype, "baseline_rev": args.baseline_rev,
               "limits": "8..256 per prompt", "identical_texts": same,
               "speedup_tokens_per_s": continuous["tokens_per_s"] / fixed["tokens_per_s"],
               "fixed": {k: v for k, v in fixed.items() if k != "texts"},
               "continuous": {k: v for k, v in continuous.items() if k != "texts"},
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True).stdout.strip()}
    out = HERE / "results" / f"continuous_batching{'' if args.dtype == 'auto' else '_' + args.dtype}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
