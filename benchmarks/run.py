"""gptcli against plain transformers on the default model: startup, load, decode, batch.

Run by hand (``python benchmarks/run.py [--quick]``); prints a table and writes
``benchmarks/results/latest.json``. Each figure is the median of repeated runs;
each speed comes with its ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GPTCLI = [str(Path(sys.executable).parent / "gptcli")]
PROMPT = "Write a short story about a lighthouse keeper."


def timed(command: list[str], env=None, stdin=None) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, input=stdin)
    return time.perf_counter() - started


def median_of(runs: int, fn) -> float:
    return statistics.median(fn() for _ in range(runs))


def bench_help(runs: int) -> dict:
    return {"help_s": median_of(runs, lambda: timed(GPTCLI + ["--help"])),
            "generate_help_s": median_of(runs, lambda: timed(GPTCLI + ["generate", "--help"]))}


def bench_conversion() -> dict:
    """First run on an empty cache: convert the GGUF, then answer."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, GPTCLI_CACHE=cache)
        seconds = timed(GPTCLI + ["generate", "hi", "--max-new-tokens", "1"], env=env)
    return {"first_run_with_conversion_s": seconds}


def bench_warm_process(runs: int) -> dict:
    """Whole process, warm cache, one token: what a shell user waits for the first word."""
    timed(GPTCLI + ["generate", "hi", "--max-new-tokens", "1"])  # make sure the cache exists
    return {"warm_process_first_token_s": median_of(runs, lambda: timed(GPTCLI + ["generate", "hi", "--max-new-tokens", "1"]))}


def bench_in_process(runs: int, new_tokens: int) -> dict:
    """Load time and single-stream decode: gptcli's loop vs plain model.generate, same dtype and prompt."""
    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.services.prompting import Prompt, encode_prompt

    loads = []
    for _ in range(runs):
        lm = load_model(LoadOptions(None), accept=(CAUSAL_LM,), command="bench")
        loads.append(lm.load_seconds)
    ids = encode_prompt(lm.tokenizer, Prompt(text=PROMPT))

    def ours() -> float:
        return decode_speed(lm, ids, new_tokens)

    def plain() -> float:
        return plain_speed(lm.model, ids, new_tokens)

    ours(), plain()  # warm-up
    ours_tps = median_of(runs, ours)
    plain_tps = median_of(runs, plain)
    lean_off_tps = median_of(runs, lambda: decode_speed(lm, ids, new_tokens, lean=False))
    results = {"warm_load_s": statistics.median(loads), "decode_tok_s": ours_tps, "plain_generate_tok_s": plain_tps,
               "decode_ratio": ours_tps / plain_tps, "decode_tok_s_lean_off": lean_off_tps,
               "dtype": lm.placement.dtype_name}
    results.update(bench_int4(runs, new_tokens, ids, plain_tps))
    return results


def plain_speed(model, ids: list[int], new_tokens: int) -> float:
    """Plain transformers `generate`, greedy, one prompt: generated tokens per second."""
    import torch

    inputs = torch.tensor([ids])
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=new_tokens, do_sample=False)
    return (out.shape[1] - len(ids)) / (time.perf_counter() - started)


def decode_speed(lm, ids: list[int], new_tokens: int, lean: bool = True) -> float:
    """gptcli's own loop, one prompt, greedy: generated tokens per second of decoding. ``lean=False``: with
    transformers' forward for every step (GPTCLI_LEAN_DECODE=0), as before the lean decode step."""
    from gptcli.engine.lean_llama import DISABLE
    from gptcli.services import generate as gen
    from gptcli.services.prompting import Fitted

    os.environ[DISABLE] = "1" if lean else "0"
    try:
        stats = gen.GenerationStats()
        list(gen.generate(lm, [Fitted(ids, new_tokens)], gen.GenerationParams(), stats=stats))
        return stats.generated_tokens / stats.decode_seconds
    finally:
        os.environ.pop(DISABLE, None)


AGREEMENT_SETS = ("xsum", "gigaword_textsum", "wmt16_en_fi", "sst2", "ag_news")


def public_texts() -> list[str]:
    """Every row of five public sets in benchmarks/data/public (news articles, headlines' articles, news
    sentences, movie reviews, news snippets: 834 texts, 32,620 tokens), each cut to its first 600
    characters: text nobody here wrote, for the agreement with float32."""
    texts = []
    for name in AGREEMENT_SETS:
        for path in sorted((HERE / "data" / "public" / name).glob("*.jsonl")):
            texts += [json.loads(line)["text"][:600] for line in path.read_text(encoding="utf-8").splitlines()]
    return texts


def bench_int4(runs: int, new_tokens: int, ids: list[int], plain_tps: float) -> dict:
    """--dtype int4: the same loop on the GGUF's 4-bit layers kept packed; and how its predictions
    compare with bf16's (top-1 agreement and loss on a fixed text, fp32 as the reference)."""
    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM
    loads, lm = [], None
    for _ in range(runs):
        lm = load_model(LoadOptions(None, dtype="int4"), accept=(CAUSAL_LM,), command="bench")
        loads.append(lm.load_seconds)

    decode_speed(lm, ids, new_tokens)  # warm-up
    tps = median_of(runs, lambda: decode_speed(lm, ids, new_tokens))
    results = {"int4_warm_load_s": statistics.median(loads), "int4_decode_tok_s": tps,
               "int4_decode_ratio_to_plain_bf16": tps / plain_tps,
               "int4_decode_tok_s_lean_off": median_of(runs, lambda: decode_speed(lm, ids, new_tokens, lean=False))}
    text = public_texts()
    reference = load_model(LoadOptions(None, dtype="float32"), accept=(CAUSAL_LM,), command="bench")
    bf16 = load_model(LoadOptions(None, dtype="bfloat16"), accept=(CAUSAL_LM,), command="bench")
    for name, model in (("bf16", bf16.model), ("int4", lm.model)):
        results.update(top1_agreement(reference, model, text, name))
    return results


def bench_engines(runs: int, new_tokens: int) -> dict:
    """One stream on each engine, in one run: plain transformers `generate` in bf16 (the baseline),
    gptcli's transformers engine (bf16) and gptcli's llama.cpp engine on the packaged GGUF; then the
    top-1 agreement of each with float32 on public text, and each whole process's peak memory."""
    import dataclasses

    from gptcli.engine.llamacpp_native import load
    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.models.resolve import packaged_default_gguf
    from gptcli.services.prompting import Prompt, encode_prompt

    bf16 = load_model(LoadOptions(None, dtype="bfloat16"), accept=(CAUSAL_LM,), command="bench")
    native = load_model(LoadOptions(None, engine="llama.cpp"), accept=(CAUSAL_LM,), command="bench")
    native_bf16 = load_model(LoadOptions(None, engine="llama.cpp", dtype="bfloat16"), accept=(CAUSAL_LM,),
                             command="bench")
    # The packaged file exactly as it is (its output projection in Q8_0), as --engine llama.cpp ran it
    # before the copy with that projection in bfloat16 (gguf_recast.with_bfloat16_output)
    as_file = dataclasses.replace(native, native=load(packaged_default_gguf()))
    ids = encode_prompt(bf16.tokenizer, Prompt(text=PROMPT))

    speeds = {"plain_generate_bf16": lambda: plain_speed(bf16.model, ids, new_tokens),
              "gptcli_transformers_bf16": lambda: decode_speed(bf16, ids, new_tokens),
              "gptcli_llamacpp": lambda: decode_speed(native, ids, new_tokens),
              "gptcli_llamacpp_file_as_is": lambda: decode_speed(as_file, ids, new_tokens),
              "gptcli_llamacpp_bf16": lambda: decode_speed(native_bf16, ids, new_tokens)}
    results = {}
    for name, fn in speeds.items():
        fn()  # warm-up
        results[f"{name}_tok_s"] = median_of(runs, fn)
    for name in list(speeds)[1:]:
        results[f"{name}_ratio_to_plain"] = results[f"{name}_tok_s"] / results["plain_generate_bf16_tok_s"]
    natives = {"llamacpp": native.native, "llamacpp_file_as_is": as_file.native, "llamacpp_bf16": native_bf16.native}
    del bf16, native, native_bf16, as_file
    reference = load_model(LoadOptions(None, dtype="float32"), accept=(CAUSAL_LM,), command="bench")
    texts = public_texts()
    results.update(top1_agreement(reference, load_model(LoadOptions(None, dtype="bfloat16"), accept=(CAUSAL_LM,),
                                                        command="bench").model, texts, "bf16"))
    for name, model in natives.items():
        results.update(llamacpp_agreement(reference, texts, model, name))
    results.update(process_memory(new_tokens))
    return results


def top1_agreement(reference, model, texts: list[str], name: str) -> dict:
    import torch

    agree = total = 0
    losses = []
    for line in texts:
        ids = reference.tokenizer(line, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            exact, out = reference.model(ids), model(ids, labels=ids)
        agree += int((exact.logits.argmax(-1) == out.logits.argmax(-1)).sum())
        total += ids.shape[1]
        losses.append(out.loss.item())
    return {f"{name}_top1_agreement_with_fp32": agree / total, f"{name}_mean_loss": statistics.mean(losses)}


PLAIN_SCRIPT = """
import resource, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, prompt, new = sys.argv[1], sys.argv[2], int(sys.argv[3])
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)["input_ids"]
with torch.inference_mode():
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def process_memory(new_tokens: int) -> dict:
    """Peak resident memory of a whole process answering PROMPT: a plain transformers script (bf16) and
    `gptcli generate` on each engine (its --stats line). Each runs as a shell's child: Linux carries a
    process's peak over exec, so a child exec'd from this (large) process would report this one's."""
    import re

    from gptcli.models.convert import converted_folder
    from gptcli.models.resolve import packaged_default_gguf

    def run(command: list[str]):
        return subprocess.run(["sh", "-c", '"$@"; exit $?', "sh", *command], check=True, capture_output=True,
                              text=True)

    plain = run([sys.executable, "-c", PLAIN_SCRIPT, str(converted_folder(packaged_default_gguf())), PROMPT,
                 str(new_tokens)])
    results = {"plain_process_peak_mib": float(plain.stdout.split()[-1])}
    for name, extra in (("transformers", []), ("llama.cpp", []), ("llama.cpp_bf16", ["--dtype", "bfloat16"])):
        engine = name.split("_")[0]
        done = run(GPTCLI + ["generate", PROMPT, "--max-new-tokens", str(new_tokens), "--stats", "--engine", engine,
                             *extra])
        results[f"gptcli_{name}_process_peak_mib"] = float(re.search(r"peak RSS (\d+) MiB", done.stderr).group(1))
    return results


def llamacpp_agreement(reference, texts: list[str], native, name: str) -> dict:
    """A llama.cpp model's top-1 agreement with float32 transformers and its mean loss, on the same
    texts and the same way as bench_int4's (every position of each text, fed at once)."""
    import torch

    agree = total = 0
    losses = []
    for line in texts:
        ids = reference.tokenizer(line, return_tensors="pt")["input_ids"]
        logits = torch.from_numpy(native.run(ids[0].tolist(), logits_for=ids.shape[1]))
        with torch.inference_mode():
            exact = reference.model(ids).logits[0]
        agree += int((exact.argmax(-1) == logits.argmax(-1)).sum())
        total += ids.shape[1]
        losses.append(torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:]).item())
    return {f"{name}_top1_agreement_with_fp32": agree / total, f"{name}_mean_loss": statistics.mean(losses)}


def environment() -> dict:
    import torch
    import transformers

    return {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--skip-conversion", action="store_true")
    parser.add_argument("--engines", action="store_true",
                        help="only the single-stream comparison of engines (results/engines.json)")
    args = parser.parse_args()
    results = {"environment": environment()}
    if args.engines:
        import llama_cpp

        results["environment"]["llama_cpp_python"] = llama_cpp.__version__
        results.update(bench_engines(args.runs, args.new_tokens))
        show_and_save(results, "engines.json")
        return
    results.update(bench_help(args.runs + 2))
    if not args.skip_conversion:
        results.update(bench_conversion())
    results.update(bench_warm_process(args.runs))
    results.update(bench_in_process(args.runs, args.new_tokens))
    show_and_save(results, "latest.json")


def show_and_save(results: dict, name: str) -> None:
    for key, value in results.items():
        print(f"{key:40} {value if isinstance(value, (dict, str)) else round(value, 3)}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / name).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
