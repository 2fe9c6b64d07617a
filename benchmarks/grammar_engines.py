"""Hand-run benchmark: the cost of constrained decoding (issue 14), and why llguidance.

Part 1 compares the two grammar engines on the default model's tokenizer (49,152 tokens):
tokenizer setup, schema compile time, and the per-token mask (computed and unpacked into a
boolean vocabulary row, as the scheduler uses it) along random walks through the grammar;
and whether each refuses schema keywords it does not implement.
Part 2 measures what the engine pays per generated token with a constraint on the default
model: time inside the grammar (mask + advance) against the whole step, one row and 8 rows.

xgrammar is not a gptcli dependency; install it beside the venv for part 1 only (without
--no-deps it pulls triton, hundreds of MB, for GPU kernels not used here):

    .venv/bin/pip install --target /tmp/xgr xgrammar==0.2.9 apache-tvm-ffi --no-deps
    XGRAMMAR_PATH=/tmp/xgr .venv/bin/python benchmarks/grammar_engines.py

Writes benchmarks/results/grammar_engines.txt. Run on an idle machine.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULT = ROOT / "benchmarks" / "results" / "grammar_engines.txt"
WALKS, WALK_TOKENS = 5, 200

PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 40},
    "age": {"type": "integer", "minimum": 0, "maximum": 150},
    "email": {"type": "string"},
    "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "maxItems": 4},
    "address": {"type": "object", "properties": {"city": {"type": "string"},
                                                 "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                "required": ["city"]},
    "score": {"type": "number", "minimum": 0, "maximum": 1}},
    "required": ["name", "age", "address"]}
UNSUPPORTED = {
    "not": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}},
    "if/then": {"type": "object", "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}},
    "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    "dependentRequired": {"type": "object", "dependentRequired": {"a": ["b"]}},
}


def unpack(bitmask, vocabulary: int):
    import torch

    bits = torch.arange(32, dtype=torch.int32)
    return ((bitmask.unsqueeze(-1) >> bits) & 1).bool().flatten()[:vocabulary]


def random_walks(new_matcher, fill, take, finished, vocabulary: int) -> list[float]:
    """Seconds per mask along WALKS random walks, each picking uniformly among allowed tokens."""
    times = []
    for seed in range(WALKS):
        matcher, rng = new_matcher(), random.Random(seed)
        for _ in range(WALK_TOKENS):
            started = time.perf_counter()
            allowed = unpack(fill(matcher), vocabulary)
            times.append(time.perf_counter() - started)
            take(matcher, rng.choice(allowed.nonzero().flatten().tolist()))
            if finished(matcher):
                break
    return times


def llguidance_figures(tokenizer, vocabulary: int) -> dict:
    import llguidance
    import llguidance.hf
    import llguidance.torch as lt

    started = time.perf_counter()
    lltok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocabulary)
    setup = time.perf_counter() - started
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(PERSON), defaults={"whitespace_flexible": False})
    started = time.perf_counter()
    llguidance.LLMatcher(lltok, grammar)
    compile_s = time.perf_counter() - started
    mask = lt.allocate_token_bitmask(1, vocabulary)

    def fill(matcher):
        lt.fill_next_token_bitmask(matcher, mask, 0)
        return mask[0]

    times = random_walks(lambda: llguidance.LLMatcher(lltok, grammar), fill, lambda m, t: m.consume_token(t),
                         lambda m: m.is_stopped(), vocabulary)
    refused = {}
    for name, schema in UNSUPPORTED.items():
        text = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema))
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(text, lltok)
        refused[name] = messages[0] if is_error else "accepted (ignored)"
    return {"setup_ms": setup * 1e3, "compile_ms": compile_s * 1e3, "mask": times, "refused": refused,
            "version": llguidance.__version__}


def xgrammar_figures(tokenizer, vocabulary: int) -> dict | None:
    if os.environ.get("XGRAMMAR_PATH"):
        sys.path.insert(0, os.environ["XGRAMMAR_PATH"])
    try:
        import xgrammar as xg
    except ImportError:
        return None
    started = time.perf_counter()
    info = xg.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocabulary)
    setup = time.perf_counter() - started
    compiler = xg.GrammarCompiler(info, cache_enabled=False)
    started = time.perf_counter()
    compiled = compiler.compile_json_schema(json.dumps(PERSON), any_whitespace=False)
    compile_s = time.perf_counter() - started
    mask = xg.allocate_token_bitmask(1, vocabulary)

    def fill(matcher):
        matcher.fill_next_token_bitmask(mask, 0)
        return mask[0]

    times = random_walks(lambda: xg.GrammarMatcher(compiled), fill, lambda m, t: m.accept_token(t),
                         lambda m: m.is_terminated(), vocabulary)
    refused = {}
    for name, schema in UNSUPPORTED.items():
        try:
            compiler.compile_json_schema(json.dumps(schema))
            refused[name] = "accepted (ignored)"
        except Exception as exc:  # noqa: BLE001 - any refusal counts
            refused[name] = str(exc).splitlines()[0][:100]
    return {"setup_ms": setup * 1e3, "compile_ms": compile_s * 1e3, "mask": times, "refused": refused,
            "version": _version("xgrammar")}


def engine_overhead(lm, rows: int) -> dict:
    """Grammar time (mask + advance) per generated token against the whole step, ``rows`` at once."""
    from gptcli.engine import constraints, scheduler
    from gptcli.engine.api import Finished, Request
    from gptcli.engine.sampling import SamplingParams

    spent = {"grammar": 0.0}
    original_mask, original_take = constraints.allowed_tokens, constraints.RowGrammar.take

    def timed_mask(*args):
        started = time.perf_counter()
        try:
            return original_mask(*args)
        finally:
            spent["grammar"] += time.perf_counter() - started

    def timed_take(self, token):
        started = time.perf_counter()
        try:
            return original_take(self, token)
        finally:
            spent["grammar"] += time.perf_counter() - started

    constraints.allowed_tokens, constraints.RowGrammar.take = timed_mask, timed_take
    try:
        constraint = constraints.json_schema(PERSON)
        ids = lm.tokenizer.apply_chat_template([{"role": "user", "content": "Invent a person as JSON."}],
                                               add_generation_prompt=True, tokenize=True, return_dict=False)
        result = {}
        for label, given in (("unconstrained", None), ("json-schema", constraint)):
            spent["grammar"] = 0.0
            engine = scheduler.Scheduler(lm, rows)
            for row in range(rows):
                engine.submit(Request(row, tuple(ids), 128, SamplingParams(temperature=0.7, seed=row), key=str(row),
                                      constraint=given))
            started, tokens = time.perf_counter(), 0
            while engine.has_work():
                tokens += sum(e.generated_tokens for e in engine.step() if isinstance(e, Finished))
            total = time.perf_counter() - started
            result[label] = {"tokens": tokens, "seconds": total, "ms_per_token": total / tokens * 1e3,
                             "grammar_ms_per_token": spent["grammar"] / tokens * 1e3}
        return result
    finally:
        constraints.allowed_tokens, constraints.RowGrammar.take = original_mask, original_take


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:  # installed with --target, outside the venv's metadata
        found = list(Path(os.environ.get("XGRAMMAR_PATH", "")).glob(f"{package}-*.dist-info"))
        return found[0].name.split("-")[1] if found else "?"


def describe(name: str, figures: dict | None) -> list[str]:
    if figures is None:
        return [f"{name}: not installed (see the docstring)"]
    times = sorted(figures["mask"])
    lines = [f"{name} {figures['version']}: tokenizer setup {figures['setup_ms']:.0f} ms, schema compile "
             f"{figures['compile_ms']:.1f} ms, mask per token median {statistics.median(times) * 1e3:.3f} ms, "
             f"p90 {times[int(len(times) * 0.9)] * 1e3:.3f} ms, max {times[-1] * 1e3:.1f} ms ({len(times)} tokens)"]
    lines += [f"  {keyword:18} {verdict}" for keyword, verdict in figures["refused"].items()]
    return lines


def main() -> None:
    import torch

    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.engine.constraints import vocabulary_size

    lm = load_model(LoadOptions(None, dtype="bfloat16"), accept=(CAUSAL_LM,), command="generate")
    vocabulary = vocabulary_size(lm.model)
    lines = [f"# grammar_engines.py, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, torch {torch.__version__}, default model bf16 (vocabulary {vocabulary})", "",
             "## Grammar engines on the default model's tokenizer (nested schema; random walks)"]
    lines += describe("llguidance", llguidance_figures(lm.tokenizer, vocabulary))
    lines += describe("xgrammar", xgrammar_figures(lm.tokenizer, vocabulary))
    lines += ["", "## In the engine: grammar time per generated token (temperature 0.7, 128-token limit)"]
    for rows in (1, 8):
        for label, figures in engine_overhead(lm, rows).items():
            lines.append(f"rows {rows} {label:14} {figures['tokens']:5} tokens {figures['seconds']:6.2f} s "
                         f"{figures['ms_per_token']:7.2f} ms/token, of which grammar "
                         f"{figures['grammar_ms_per_token']:.3f} ms")
    RESULT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
