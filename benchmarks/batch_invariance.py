"""Does a record's greedy result depend on what else is in its batch? (issue 12)

    python benchmarks/batch_invariance.py [--lines 20] [--dtypes float32,bfloat16]

On the default model (SmolLM2-135M-Instruct), through the real translate service (Translator ->
Runner -> services.generate), English->Romanian on the first ``--lines`` public Tatoeba sentences:

1. runs: the ``--lines``-line run (batched as the CLI does on CPU: up to 32 rows, 4096 tokens a
   batch), a 3-line run, and every line alone (``--batch-size 1``); counts the lines whose
   translation differs from the line run alone;
2. where a line differs: the first generated token that differs, the alone run's gap between its
   best and second-best logit there, and the largest logit difference (batched vs alone) over the
   steps up to it: a flip happens where that difference reaches the gap;
3. isolation, on one prompt's first step: left padding by k tokens (batch of 1, positions from the
   mask), with SDPA and eager attention; a batch of copies (no padding); a decode step of k
   identical rows (same cache, no padding) against one row;
4. cost: wall time of the batched run and of the one-at-a-time run.
Writes benchmarks/results/batch_invariance.txt (and prints it). ``--layers`` instead appends, per
dtype, the first module whose output changes (forward hooks) when a row is left-padded, and when
a second row of the same length joins it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "public" / "tatoeba_en_ro" / "test.jsonl"
RESULT = HERE / "results" / "batch_invariance.txt"
CPU_ROWS, CPU_TOKENS = 32, 4096  # what --batch-size 0 chooses on a CPU (services/batching.py)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--layers", action="store_true")
    args = parser.parse_args()
    import torch

    if args.layers:
        text = "\n".join(line for dtype in args.dtypes.split(",") for line in _first_changes(dtype)) + "\n"
        with RESULT.open("a", encoding="utf-8") as handle:
            handle.write(text)
        print(text)
        return
    lines = [json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines()[:args.lines]]
    report = [f"batch invariance, {date.today()}, {platform.machine()} {torch.get_num_threads()} threads, "
              f"torch {torch.__version__}, transformers {_version('transformers')}",
              f"default model, translate en->ro, first {len(lines)} lines of {DATA.relative_to(HERE.parent)}", ""]
    for dtype in args.dtypes.split(","):
        report += _one_dtype(dtype, lines)
    text = "\n".join(report) + "\n"
    RESULT.write_text(text, encoding="utf-8")
    print(text)


def _one_dtype(dtype: str, lines: list[str]) -> list[str]:
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.models.loader import LoadOptions, load_model

    lm = load_model(LoadOptions(dtype=dtype), (CAUSAL_LM,), "translate")
    out = [f"== {dtype} =="]
    alone, alone_log, alone_s = _translate(lm, lines, 1, None)
    batched, batched_log, batched_s = _translate(lm, lines, CPU_ROWS, CPU_TOKENS)
    three, three_log, _ = _translate(lm, lines[:3], CPU_ROWS, CPU_TOKENS)
    for name, texts, log in ((f"{len(lines)}-line run", batched, batched_log), ("3-line run", three, three_log)):
        differ = [i for i, t in enumerate(texts) if t != alone[i]]
        out.append(f"{name}: {len(differ)} of {len(texts)} lines differ from the line run alone "
                   f"(lines {', '.join(str(i + 1) for i in differ) or '-'})")
        for i in differ:
            out.append("  " + _divergence(i, alone_log, log))
    out.append(f"time: {len(lines)} lines batched {batched_s:.1f} s, one at a time {alone_s:.1f} s "
               f"({alone_s / batched_s:.2f}x)")
    out += _isolation(lm, lines)
    out.append("")
    return out


def _translate(lm, lines: list[str], rows: int, tokens: int | None):
    """Translations through the real service, with each row's logits recorded step by step."""
    from gptcli.services import generate
    from gptcli.services.translate import TranslateParams, make_translator

    log: dict[tuple, list] = {}
    original = generate.TokenPicker
    generate.TokenPicker = _recording_picker(original, log)
    try:
        started = time.perf_counter()
        translator = make_translator(lm, TranslateParams("ro", batch_size=rows, max_batch_tokens=tokens))
        texts = [t.text for t in translator.translate(lines)]
        seconds = time.perf_counter() - started
    finally:
        generate.TokenPicker = original
    # Rows are recorded by prompt; map them back to lines (each line's text is in its prompt only).
    by_line = {next(i for i, line in enumerate(lines) if line in lm.tokenizer.decode(list(prompt))): steps
               for prompt, steps in log.items()}
    return texts, by_line, seconds


def _recording_picker(base, log: dict):
    class Recording(base):
        def __call__(self, history, logits, generators):
            # Greedy: ``history`` stays the batch's left-padded prompt, one per row, all along.
            picked = super().__call__(history, logits, generators)
            for row, token in enumerate(picked.tolist()):
                prompt = tuple(history[row].tolist())
                log.setdefault(prompt, []).append((token, logits[row].float().clone()))
            return picked
    return Recording


def _divergence(line: int, alone_log: dict, log: dict) -> str:
    alone, other = alone_log[line], log[line]
    worst = 0.0
    for step, ((a_tok, a_logits), (b_tok, b_logits)) in enumerate(zip(alone, other)):
        worst = max(worst, float((a_logits - b_logits).abs().max()))
        if a_tok != b_tok:
            top = a_logits.topk(2).values
            return (f"line {line + 1}: first differing token at step {step + 1}; alone best-vs-second gap there "
                    f"{float(top[0] - top[1]):.4g}; largest logit difference up to it {worst:.4g}")
    return f"line {line + 1}: same tokens while both ran (differs after one ended)"


def _isolation(lm, lines: list[str]) -> list[str]:
    """Which shape change moves the logits of one prompt (first line), with nothing else changed."""
    import torch

    from gptcli.services.prompting import Prompt, encode_prompt

    model = lm.model
    ids = encode_prompt(lm.tokenizer, Prompt(text="Translate into Romanian: The rain fell relentlessly all day."))

    def first_logits(rows: list[list[int]], pads: list[int]):
        width = max(len(r) + p for r, p in zip(rows, pads))
        inp = torch.tensor([[0] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        with torch.inference_mode():
            return model(input_ids=inp, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                         logits_to_keep=1).logits[:, -1].float()

    out = []
    saved = model.config._attn_implementation
    try:
        for impl in ("sdpa", "eager"):
            model.config._attn_implementation = impl
            base = first_logits([ids], [0])
            gaps = [f"{k}:{float((first_logits([ids], [k])[0] - base[0]).abs().max()):.3g}" for k in (1, 2, 3, 4, 8)]
            out.append(f"isolation ({impl}), first step, max |logit change| with k left pads (batch of 1): "
                       + " ".join(gaps))
    finally:
        model.config._attn_implementation = saved
    base = first_logits([ids], [0])
    copies = first_logits([ids] * 8, [0] * 8)
    out.append(f"isolation, first step, 8 copies (no padding) vs alone: {float((copies[0] - base[0]).abs().max()):.3g}")
    one = _steps(model, [ids], 1)[-1][0]
    out.append("isolation, one decode step, k identical rows (no padding) vs one row: " + " ".join(
        f"{k}:{float((_steps(model, [ids] * k, 1)[-1][0] - one).abs().max()):.3g}" for k in (2, 4, 8)))
    prompts = [encode_prompt(lm.tokenizer, Prompt(text=f"Translate into Romanian: {line}")) for line in lines]
    width = max(set(map(len, prompts)), key=[len(p) for p in prompts].count)
    same = [p for p in prompts if len(p) == width]
    together = _steps(model, same, 4)
    moved = [max(float((alone[0] - both[row]).abs().max()) for alone, both in zip(_steps(model, [p], 4), together))
             for row, p in enumerate(same)]
    out.append(f"isolation, {len(same)} different prompts of the same length ({width} tokens, no padding), prefill + 4 "
               f"decode steps, max |logit change| per row vs alone: " + " ".join(f"{m:.3g}" for m in moved))
    return out


def _steps(model, rows: list[list[int]], decode: int) -> list:
    """Last-position logits of the prefill and of ``decode`` greedy steps (transformers' own cache)."""
    import torch

    from gptcli.engine.kvcache import cache_argument, returned_cache

    logits = []
    with torch.inference_mode():
        out = model(input_ids=torch.tensor(rows), use_cache=True)
        logits.append(out.logits[:, -1].float())
        for _ in range(decode):
            nxt = out.logits[:, -1:].argmax(-1)
            out = model(input_ids=nxt, use_cache=True, **{cache_argument(model): returned_cache(out)})
            logits.append(out.logits[:, -1].float())
    return logits


def _first_changes(dtype: str) -> list[str]:
    """Where a row's numbers first change: the first module (in call order) whose output for it differs."""
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.models.loader import LoadOptions, load_model
    from gptcli.services.prompting import Prompt, encode_prompt

    lm = load_model(LoadOptions(dtype=dtype), (CAUSAL_LM,), "generate")
    model = lm.model
    lines = [json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines()[:20]]
    prompts = [encode_prompt(lm.tokenizer, Prompt(text=f"Translate into Romanian: {line}")) for line in lines]
    width = max(set(map(len, prompts)), key=[len(p) for p in prompts].count)
    first, second = [p for p in prompts if len(p) == width][:2]
    record: list = []
    hooks = [module.register_forward_hook(_recorder(name, record)) for name, module in model.named_modules()
             if name and name != "model"]
    try:
        out = [f"== {dtype}: first change (call, module, max |change| of its output for the row) =="]
        base = _hooked(model, [first], [0], 3, record)
        for pads in (1, 3):
            found = _first_difference(base, _hooked(model, [first], [pads], 3, record), pads)
            out.append(f"left-padded by {pads} (batch of 1): {found}")
        found = _first_difference(base, _hooked(model, [first, second], [0, 0], 3, record), 0)
        out.append(f"a second prompt of the same length beside it (no padding): {found}")
    finally:
        for hook in hooks:
            hook.remove()
    return out + [""]


def _recorder(name: str, record: list):
    def hook(_module, inputs, output):
        # The input too: o_proj's input is the attention result, which no module returns.
        for label, value in ((f"{name} input", inputs[0] if inputs else None), (name, output)):
            tensor = value[0] if isinstance(value, tuple) else value
            if hasattr(tensor, "dim") and tensor.dim() >= 2:
                record.append((label, tensor[0].detach().float().clone()))  # row 0: the row followed
    return hook


def _hooked(model, rows: list[list[int]], pads: list[int], decode: int, record: list) -> list:
    """Every hooked module's output for row 0, per forward call: prefill, then ``decode`` steps."""
    import torch

    from gptcli.engine.kvcache import cache_argument, returned_cache

    width = max(len(r) + p for r, p in zip(rows, pads))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    calls = []
    with torch.inference_mode():
        record.clear()
        out = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        calls.append(list(record))
        for _ in range(decode):
            record.clear()
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            out = model(input_ids=out.logits[:, -1:].argmax(-1), attention_mask=mask,
                        position_ids=mask.sum(-1, keepdim=True) - 1, **{cache_argument(model): returned_cache(out)})
            calls.append(list(record))
    return calls


def _first_difference(base: list, other: list, pads: int) -> str:
    for call, (mine, theirs) in enumerate(zip(base, other)):
        for (name, a), (_name, b) in zip(mine, theirs):
            if call == 0 and b.shape[0] == a.shape[0] + pads:  # prefill: drop the row's pad positions
                b = b[pads:]
            if a.shape == b.shape and not _equal(a, b):
                step = "prefill" if call == 0 else f"decode step {call}"
                return f"{step}, {name}, {float((a - b).abs().max()):.3g}"
    return "none: identical throughout"


def _equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    sys.exit(main())
