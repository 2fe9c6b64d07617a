"""Batch throughput on the default model: gptcli against plain transformers and llama.cpp.

    python benchmarks/batch.py [--prompts 256] [--baseline-prompts 32] [--tasks]

1. ``gptcli generate --input prompts.txt --output out.jsonl`` (64 new tokens, greedy), the whole
   process timed from the shell, as a user runs it: the default engine, ``--dtype int4``, and
   ``--engine llama.cpp`` on the GGUF's own 4-bit weights and on its bfloat16 copy;
2. the same prompts one at a time through plain ``model.generate`` (same folder, dtype and chat
   template), in a process of its own;
3. llama.cpp (``pip install llama-cpp-python``, optional) on the same SmolLM2 GGUF file, one prompt
   at a time, as ollama serves them.
The baselines run on the first ``--baseline-prompts`` prompts (their rate does not depend on how
many); every figure is prompts/s and generated tokens/s, with peak RSS. ``--tasks`` adds classify
(1,000 lines), summarize (50 paragraphs) and translate (500 lines) through gptcli.
Writes benchmarks/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GPTCLI = str(Path(sys.executable).parent / "gptcli")
NEW_TOKENS = 64
SUBJECTS = ["the sea", "a lighthouse", "bread", "winter", "a bicycle", "the moon", "coffee", "a library",
            "rain", "mountains", "a violin", "honey", "trains", "a garden", "volcanoes", "owls"]
ASKS = ["Write two sentences about {}.", "Give three facts about {}.", "Describe {} to a child.",
        "Write a short poem about {}.", "What is interesting about {}?", "Explain why people like {}.",
        "List some words that go with {}.", "Tell a very short story about {}.",
        "Compare {} with something surprising.", "What would a scientist say about {}?",
        "Write a haiku about {}.", "Give advice to someone who has never seen {}.",
        "Invent a product inspired by {}.", "Summarize the history of {} in two lines.",
        "Write a riddle whose answer is {}.", "Describe {} in exactly one sentence."]


def make_prompts(count: int) -> list[str]:
    return [ASKS[i % len(ASKS)].format(SUBJECTS[(i // len(ASKS) + i) % len(SUBJECTS)]) for i in range(count)]


def run_child(command: list[str], stdin_text: str = "") -> tuple[str, float, float]:
    """Run a command; return its stdout, wall seconds and its own peak RSS in MiB (from wait4)."""
    with tempfile.TemporaryFile("w+") as given, tempfile.TemporaryFile("w+") as taken:
        given.write(stdin_text)
        given.seek(0)
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdin=given, stdout=taken, stderr=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, command)
        taken.seek(0)
        return taken.read(), seconds, usage.ru_maxrss / 1024


def run_gptcli(prompts: list[str], work: Path, extra: list[str]) -> dict:
    source = work / "prompts.txt"
    source.write_text("\n".join(prompts) + "\n")
    out = work / "out.jsonl"
    out.unlink(missing_ok=True)
    _stdout, seconds, rss = run_child([GPTCLI, "generate", "--input", str(source), "--output", str(out),
                                       "--max-new-tokens", str(NEW_TOKENS), "--temperature", "0", *extra])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    tokens = sum(r["generated_tokens"] for r in records)
    return {"prompts": len(records), "seconds": seconds, "prompts_per_s": len(records) / seconds,
            "tokens_per_s": tokens / seconds, "generated_tokens": tokens, "peak_rss_mib": rss}


PLAIN = r'''
import json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, dtype, new_tokens = sys.argv[1], getattr(torch, sys.argv[2]), int(sys.argv[3])
prompts = json.loads(sys.stdin.read())
started = time.perf_counter()
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
load = time.perf_counter() - started
tokens = 0
started = time.perf_counter()
for prompt in prompts:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False)
    tokens += out.shape[1] - ids["input_ids"].shape[1]
print(json.dumps({"seconds": time.perf_counter() - started, "load_s": load, "tokens": tokens}))
'''

LLAMA = r'''
import json, sys, time
from llama_cpp import Llama
path, new_tokens = sys.argv[1], int(sys.argv[2])
prompts = json.loads(sys.stdin.read())
started = time.perf_counter()
llm = Llama(model_path=path, n_ctx=2048, n_threads=2, verbose=False)
load = time.perf_counter() - started
tokens = 0
started = time.perf_counter()
for prompt in prompts:
    out = llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=new_tokens, temperature=0)
    tokens += out["usage"]["completion_tokens"]
print(json.dumps({"seconds": time.perf_counter() - started, "load_s": load, "tokens": tokens}))
'''


def run_script(python: str, script: str, args: list[str], prompts: list[str]) -> dict:
    stdout, _seconds, rss = run_child([python, "-c", script, *args], json.dumps(prompts))
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"prompts": len(prompts), "seconds": result["seconds"], "load_s": result["load_s"],
            "prompts_per_s": len(prompts) / result["seconds"], "tokens_per_s": result["tokens"] / result["seconds"],
            "generated_tokens": result["tokens"], "peak_rss_mib": rss}


def default_model() -> tuple[str, str, str]:
    """The converted default-model folder, its stored dtype name as gptcli would run it, and the GGUF."""
    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.models.resolve import packaged_default_gguf

    lm = load_model(LoadOptions(None), accept=(CAUSAL_LM,), command="bench")
    return lm.model.name_or_path, lm.placement.dtype_name, str(packaged_default_gguf())


def measured(name: str, fn) -> dict:
    result = fn()
    print(f"{name:38s} {result['prompts']:5d} prompts {result['prompts_per_s']:7.2f} prompts/s "
          f"{result['tokens_per_s']:8.1f} tok/s  peak RSS {result['peak_rss_mib']:6.0f} MiB", flush=True)
    return result


PLAIN_TASKS = r'''
import json, sys, time, torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
task, folder, dtype = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
items = json.loads(sys.stdin.read())
started = time.perf_counter()
if task == "classify":  # the same zero-shot method as gptcli's: cosine to label descriptions, one line at a time
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    def embed(text):
        batch = tokenizer([text], return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state[0]
        return torch.nn.functional.normalize(hidden.mean(0), dim=-1)
    labels = torch.stack([embed(f"This text is about {label}.") for label in ("positive", "negative")])
    for text in items:
        (labels @ embed(text)).argmax()
else:  # summarize / translate: the same instruction through the chat template, one item at a time
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    for text in items:
        if task == "summarize":
            content, budget = f"{text}\n\nSummarize the text above in one sentence. Reply with the summary only.", 60
        else:
            content = f"Translate the following text into French. Reply with the French translation only.\n\n{text}"
            budget = 2 * len(tokenizer(text)["input_ids"]) + 16
        ids = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            model.generate(**ids, max_new_tokens=budget, do_sample=False)
print(json.dumps({"seconds": time.perf_counter() - started}))
'''


def plain_task(task: str, folder: str, dtype: str, items: list[str]) -> dict:
    stdout, _wall, rss = run_child([sys.executable, "-c", PLAIN_TASKS, task, folder, dtype], json.dumps(items))
    seconds = json.loads(stdout.strip().splitlines()[-1])["seconds"]
    return {"items": len(items), "seconds": seconds, "items_per_s": len(items) / seconds, "peak_rss_mib": rss}


def task_runs(work: Path, folder: str, dtype: str, baseline_items: int) -> dict:
    from benchmarks.task_inputs import classify_lines, paragraphs, translate_lines
    from gptcli.models.resolve import packaged_minilm_folder

    runs = {}
    for name, args, text in (
            ("classify_1000_lines", ["classify", "--labels", "positive,negative"], classify_lines(1000)),
            ("summarize_50_paragraphs", ["summarize", "--length", "short"], paragraphs(50)),
            ("translate_500_lines", ["translate", "--to", "fr"], translate_lines(500))):
        source = work / (f"{name}.jsonl" if name.startswith("summarize") else f"{name}.txt")
        source.write_text(text)
        out = work / f"{name}.out.jsonl"
        out.unlink(missing_ok=True)
        _stdout, seconds, rss = run_child([GPTCLI, *args, "--input", str(source), "--output", str(out)])
        items = len(out.read_text().splitlines())
        runs[name] = {"items": items, "seconds": seconds, "items_per_s": items / seconds, "peak_rss_mib": rss}
        print(f"{name:38s} {items:5d} items   {items / seconds:7.2f} items/s ({seconds:.0f} s)  "
              f"peak RSS {rss:6.0f} MiB", flush=True)
        task = name.split("_")[0]
        inputs = [json.loads(line)["text"] if task == "summarize" else line for line in text.splitlines()]
        count = max(1, baseline_items // 10) if task == "summarize" else baseline_items
        model = str(packaged_minilm_folder()) if task == "classify" else folder
        plain = plain_task(task, model, dtype, inputs[:count])
        runs[name]["plain_one_at_a_time"] = plain
        runs[name]["ratio"] = runs[name]["items_per_s"] / plain["items_per_s"]
        print(f"{'  plain, one at a time':38s} {plain['items']:5d} items   {plain['items_per_s']:7.2f} items/s  "
              f"peak RSS {plain['peak_rss_mib']:6.0f} MiB  -> gptcli {runs[name]['ratio']:.1f}x", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--baseline-prompts", type=int, default=32)
    parser.add_argument("--llama-python", default=os.environ.get("LLAMA_PYTHON", sys.executable),
                        help="a Python with llama-cpp-python installed (default: this one)")
    parser.add_argument("--tasks", action="store_true", help="also classify, summarize and translate")
    args = parser.parse_args()
    prompts = make_prompts(args.prompts)
    folder, dtype, gguf = default_model()
    results: dict = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "dtype": dtype,
                     "new_tokens": NEW_TOKENS}
    with tempfile.TemporaryDirectory() as work:
        results["gptcli_batched"] = measured("gptcli generate --input (batched)",
                                             lambda: run_gptcli(prompts, Path(work), []))
        results["gptcli_batched_int4"] = measured("gptcli generate --input --dtype int4 (batched)",
                                                  lambda: run_gptcli(prompts, Path(work), ["--dtype", "int4"]))
        for name, extra in (("gptcli_batched_llamacpp", ["--engine", "llama.cpp"]),
                            ("gptcli_batched_llamacpp_bf16", ["--engine", "llama.cpp", "--dtype", "bfloat16"])):
            try:
                results[name] = measured(f"gptcli generate --input {' '.join(extra)} (batched)",
                                         lambda extra=extra: run_gptcli(prompts, Path(work), extra))
            except subprocess.CalledProcessError as error:  # llama-cpp-python not installed: exit 2
                print(f"{name} skipped: {error}")
        results["plain_one_at_a_time"] = measured(
            "plain model.generate, one at a time",
            lambda: run_script(sys.executable, PLAIN, [folder, dtype, str(NEW_TOKENS)],
                               prompts[:args.baseline_prompts]))
        try:
            results["llama_cpp_one_at_a_time"] = measured(
                "llama.cpp (Q4_1 GGUF), one at a time",
                lambda: run_script(args.llama_python, LLAMA, [gguf, str(NEW_TOKENS)], prompts[:args.baseline_prompts]))
        except subprocess.CalledProcessError as error:
            print(f"llama.cpp skipped: {error.stderr.strip().splitlines()[-1] if error.stderr else error}")
        for ours in ("gptcli_batched", "gptcli_batched_llamacpp", "gptcli_batched_llamacpp_bf16"):
            for key in ("plain_one_at_a_time", "llama_cpp_one_at_a_time"):
                if ours in results and key in results:
                    ratio = results[ours]["prompts_per_s"] / results[key]["prompts_per_s"]
                    results[f"ratio_{ours}_vs_{key}"] = ratio
                    print(f"{ours} / {key}: {ratio:.2f}x prompts/s")
        if args.tasks:
            results["tasks"] = task_runs(Path(work), folder, dtype, 4 * args.baseline_prompts)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "batch.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()
