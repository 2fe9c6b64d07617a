"""gptcli finetune against a plain transformers.Trainer script: tokens/s and peak memory.

    python benchmarks/finetune_vs_trainer.py [--steps 20]

Same model (the default SmolLM2-135M, float32 on CPU), same data (examples/chat.jsonl, chat template),
same sequence cap (128), batch size 4, same LoRA (r 16 on q/k/v/o) or full training. Tokens/s counts
every token of every batch, padding included, for both. Each run is a process of its own; peak RSS
comes from wait4. A last pair compares three epochs with and without --packing (wall time).
Writes benchmarks/results/finetune_vs_trainer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "examples" / "chat.jsonl"
GPTCLI = str(Path(sys.executable).parent / "gptcli")
MAX_LENGTH, BATCH = 128, 4

TRAINER = r'''
import json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, TrainerCallback
folder, data, method, steps, max_length, batch, out = sys.argv[1:8]
steps, max_length, batch = int(steps), int(max_length), int(batch)
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
if method == "lora":
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
rows = [json.loads(line) for line in open(data) if line.strip()]
examples = []
for row in rows:
    ids = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"][:max_length]
    examples.append({"input_ids": ids, "labels": list(ids)})
seen = {"sizes": []}
def collate(batch_rows):
    width = max(len(r["input_ids"]) for r in batch_rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(batch_rows), width), pad)
    labels = torch.full((len(batch_rows), width), -100)
    mask = torch.zeros((len(batch_rows), width), dtype=torch.long)
    for i, r in enumerate(batch_rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"]); labels[i, :n] = torch.tensor(r["labels"]); mask[i, :n] = 1
    seen["sizes"].append(ids.numel())
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-4,
                         logging_steps=1000, save_strategy="no", report_to=[], use_cpu=True,
                         dataloader_num_workers=0, remove_unused_columns=False)
trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=collate)
started = time.perf_counter()
trainer.train()
seconds = time.perf_counter() - started
# The dataloader collates one batch ahead (accelerate looks for the end of the data): count only the
# batches that were trained on, or tokens/s comes out 1/steps too high.
trained = seen["sizes"][:steps] if steps > 0 else seen["sizes"]
print(json.dumps({"seconds": seconds, "tokens": sum(trained), "collated": len(seen["sizes"])}))
'''


def run_child(command: list[str]) -> tuple[str, float, float]:
    """stdout, wall seconds and the child's own peak RSS (MiB, from wait4)."""
    with tempfile.TemporaryFile("w+") as taken:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=taken, stderr=subprocess.DEVNULL)
        _pid, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise subprocess.CalledProcessError(os.waitstatus_to_exitcode(status), command)
        taken.seek(0)
        return taken.read(), time.perf_counter() - started, usage.ru_maxrss / 1024


def gptcli_run(method: str, steps: int, work: Path, extra: list[str], data: Path = DATA) -> dict:
    out = work / f"gptcli-{method}-{len(extra)}"
    shutil.rmtree(out, ignore_errors=True)
    command = [GPTCLI, "finetune", "--data", str(data), "-o", str(out), "--method", method, "--batch-size",
               str(BATCH), "--max-length", str(MAX_LENGTH), "--eval-fraction", "0", "--no-merge",
               "--learning-rate", "1e-4", "--lora-r", "16", "--lora-alpha", "32", "--device", "cpu", *extra]
    command += ["--max-steps", str(steps)] if steps else ([] if "--epochs" in extra else ["--epochs", "3"])
    _stdout, wall, rss = run_child(command)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = [m for m in metrics if "loss" in m][-1]
    return {"tokens_per_s": last["tokens_per_second"], "steps": last["step"], "wall_s": wall, "peak_rss_mib": rss}


def trainer_run(folder: str, method: str, steps: int, work: Path) -> dict:
    stdout, wall, rss = run_child([sys.executable, "-c", TRAINER, folder, str(DATA), method, str(steps),
                                   str(MAX_LENGTH), str(BATCH), str(work / f"trainer-{method}")])
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"tokens_per_s": result["tokens"] / result["seconds"], "steps": steps, "wall_s": wall,
            "peak_rss_mib": rss}


def short_varied_texts(path: Path) -> Path:
    """240 `text` rows of 1 to 6 benchmark sentences: the short, uneven data packing is for."""
    from benchmarks.task_inputs import sentences

    pool, rng = sentences(), random.Random(0)
    rows = [" ".join(rng.choice(pool) for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 6]))) for _ in range(240)]
    path.write_text("".join(json.dumps({"text": row}) + "\n" for row in rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM

    folder = load_model(LoadOptions(None), accept=(CAUSAL_LM,), command="bench").model.name_or_path
    results: dict = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "max_length": MAX_LENGTH,
                     "batch_size": BATCH}
    with tempfile.TemporaryDirectory() as work:
        for method in ("lora", "full"):
            ours = gptcli_run(method, args.steps, Path(work), [])
            plain = trainer_run(folder, method, args.steps, Path(work))
            ratio = ours["tokens_per_s"] / plain["tokens_per_s"]
            results[method] = {"gptcli": ours, "trainer": plain, "tokens_per_s_ratio": ratio,
                               "peak_rss_ratio": ours["peak_rss_mib"] / plain["peak_rss_mib"]}
            print(f"{method:5s} gptcli {ours['tokens_per_s']:7.1f} tok/s {ours['peak_rss_mib']:6.0f} MiB | "
                  f"Trainer {plain['tokens_per_s']:7.1f} tok/s {plain['peak_rss_mib']:6.0f} MiB | "
                  f"{ratio:.2f}x", flush=True)
        unpacked = gptcli_run("lora", 0, Path(work), [])
        packed = gptcli_run("lora", 0, Path(work), ["--packing"])
        results["three_epochs_lora"] = {"unpacked": unpacked, "packed": packed,
                                        "speedup": unpacked["wall_s"] / packed["wall_s"]}
        print(f"three epochs: {unpacked['steps']} steps in {unpacked['wall_s']:.1f} s unpacked, "
              f"{packed['steps']} steps in {packed['wall_s']:.1f} s packed", flush=True)
        varied = short_varied_texts(Path(work) / "varied.jsonl")
        unpacked = gptcli_run("lora", 0, Path(work), ["--epochs", "1"], data=varied)
        packed = gptcli_run("lora", 0, Path(work), ["--epochs", "1", "--packing"], data=varied)
        results["short_varied_one_epoch_lora"] = {"unpacked": unpacked, "packed": packed,
                                                  "speedup": unpacked["wall_s"] / packed["wall_s"]}
        print(f"240 short texts of varied length, one epoch: {unpacked['wall_s']:.1f} s unpacked, "
              f"{packed['wall_s']:.1f} s packed", flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "finetune_vs_trainer.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
