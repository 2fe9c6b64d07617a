"""The training loop: deterministic batches, accumulation, eval, best weights, checkpoints.

Batches are a pure function of (seed, step): resuming at step k replays
exactly the batches an uninterrupted run would have seen, in every process.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from gptcli import console
from gptcli.errors import GptcliError, UsageError
from gptcli.finetune import checkpoint
from gptcli.finetune.config import TrainConfig
from gptcli.finetune.tokens import IGNORE, Example, pack


@dataclass
class Summary:
    """What the model card and the closing lines report."""

    steps: int
    total_steps: int
    seconds: float
    tokens: int
    best_step: int | None = None
    best_eval: dict | None = None
    first_eval: dict | None = None
    stopped_early: bool = False
    evals: list[dict] = field(default_factory=list)
    used: dict = field(default_factory=dict)  # the values the "auto" and 0 settings turned into
    perplexity: dict = field(default_factory=dict)  # "base", "tuned": evaluate.Figures on the eval rows


class Batches:
    """Which examples each (step, micro-batch, process) gets, and their tensors."""

    def __init__(self, examples: list[Example], config: TrainConfig, world: int, rank: int, pad_id: int):
        self.packed = config.packing
        self.examples = pack(examples, config.max_length) if config.packing else examples
        self.config, self.world, self.rank, self.pad_id = config, world, rank, pad_id
        self.per_step = config.batch_size * config.grad_accum * world
        self._orders: dict[int, list[int]] = {}

    def total_steps(self) -> int:
        if self.config.max_steps > 0:
            return self.config.max_steps
        return max(1, math.ceil(self.config.epochs * len(self.examples) / self.per_step))

    def micro(self, step: int, micro: int) -> list[Example]:
        size = self.config.batch_size
        start = step * self.per_step + (micro * self.world + self.rank) * size
        return [self.examples[self._index(i)] for i in range(start, start + size)]

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, len(self.examples))
        if epoch not in self._orders:
            import torch

            generator = torch.Generator().manual_seed(self.config.seed + epoch)
            self._orders = {epoch: torch.randperm(len(self.examples), generator=generator).tolist()}
        return self._orders[epoch][offset]

    def collate(self, examples: list[Example], classify: bool, packed: bool | None = None) -> dict:
        import torch

        packed = self.packed if packed is None else packed
        width = max(len(e.input_ids) for e in examples)
        pads = [width - len(e.input_ids) for e in examples]
        inputs = {"input_ids": torch.tensor([e.input_ids + [self.pad_id] * p for e, p in zip(examples, pads)])}
        if classify:
            inputs["attention_mask"] = torch.tensor([[1] * len(e.input_ids) + [0] * p for e, p in zip(examples, pads)])
            return {"inputs": inputs, "labels": torch.tensor([e.labels[0] for e in examples]), "count": len(examples)}
        if packed:  # no mask: restarting position ids tell the model where each example starts
            inputs["position_ids"] = torch.tensor([e.position_ids + list(range(p)) for e, p in zip(examples, pads)])
        else:
            inputs["attention_mask"] = torch.tensor([[1] * len(e.input_ids) + [0] * p for e, p in zip(examples, pads)])
        inputs["use_cache"] = False  # a cache would also switch off the packed-sequence mask
        labels = torch.tensor([e.labels + [IGNORE] * p for e, p in zip(examples, pads)])
        return {"inputs": inputs, "labels": labels, "count": int((labels[:, 1:] != IGNORE).sum())}


class Trainer:
    """One training run in this process; the main process writes metrics and checkpoints."""

    def __init__(self, config: TrainConfig, accelerator, model, tokenizer, train: list[Example],
                 evals: list[Example], out: Path):
        self.config, self.accelerator, self.out = config, accelerator, out
        self.classify = config.task == "classify"
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.batches = Batches(train, config, accelerator.num_processes, accelerator.process_index, pad_id)
        self.evals = evals
        self.total = self.batches.total_steps()
        self.every = _periods(config, self.total)
        optimizer, self.scheduler = _optimizer(model, config, self.total)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.state = {"step": 0, "best_loss": None, "best_step": None, "bad_evals": 0, "metrics_bytes": 0,
                      "tokens": 0, "seconds": 0.0, "first_eval": None,
                      "run": run_identity(config, self.batches.examples)}
        self._step_rng: dict | None = None
        self._last_save = time.monotonic()  # the default save policy counts from the start
        if accelerator.num_processes > 1:
            self._info(f"training in {accelerator.num_processes} processes ({accelerator.distributed_type.value})")

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def train(self) -> Summary:
        if self.config.resume and checkpoint.latest(self.out) is not None:
            self._resume()
        elif self.config.resume:
            self._info(f"no checkpoint in {self.out} yet: starting from step 0")
        metrics = _MetricsFile(self.out / "metrics.jsonl", self.state["metrics_bytes"], self.main)
        summary = Summary(0, self.total, 0.0, 0)
        try:
            with metrics, console.Progress("training", self.total - self.state["step"]) as bar:
                if self.state["step"] == 0 and self.evals:
                    self.state["first_eval"] = self._evaluate(0, metrics)
                self._run(metrics, bar, summary)
        except KeyboardInterrupt:
            self._interrupted()
            raise
        return self._summary(summary, metrics)

    def _run(self, metrics: "_MetricsFile", bar, summary: Summary) -> None:
        started = time.perf_counter() - self.state["seconds"]
        for step in range(self.state["step"], self.total):
            self._step_rng = checkpoint.rng_state()  # a Ctrl-C mid-step resumes from here
            loss, tokens = self._train_step(step)
            self._step_rng = None
            self.state.update(step=step + 1, tokens=self.state["tokens"] + tokens,
                              seconds=time.perf_counter() - started)
            record = self._log(step + 1, loss, metrics)
            self._check_finite("training loss", loss, step + 1)
            bar.advance(description=f"loss {loss:.4f} · lr {record['learning_rate']:.1e} · "
                                    f"{record['tokens_per_second']:.0f} tok/s")
            if self.evals and ((step + 1) % self.every["eval"] == 0 or step + 1 == self.total):
                if self._evaluate(step + 1, metrics) is None:
                    summary.stopped_early = True
                    break
            if self._checkpoint_due(step + 1):
                self._checkpoint(metrics)

    def _train_step(self, step: int) -> tuple[float, int]:
        accum = self.config.grad_accum
        batches = [self.batches.collate(self.batches.micro(step, m), self.classify) for m in range(accum)]
        count = sum(b["count"] for b in batches)
        loss_sum = 0.0
        for index, batch in enumerate(batches):
            # Gradients are synchronised across processes on the last micro-batch only.
            sync = contextlib.nullcontext() if index == accum - 1 else self.accelerator.no_sync(self.model)
            with sync:
                loss, _ = self._loss(batch)
                self.accelerator.backward(loss / max(count, 1))
            loss_sum += loss.item()
        if self.config.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        tokens = sum(int(b["inputs"]["input_ids"].numel()) for b in batches) * self.accelerator.num_processes
        return self._mean(loss_sum, count), tokens

    def _loss(self, batch: dict):
        import torch.nn.functional as F

        device = self.accelerator.device
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch["inputs"].items()}
        labels = batch["labels"].to(device)
        logits = self.model(**inputs).logits.float()
        if self.classify:
            return F.cross_entropy(logits, labels, reduction="sum"), int((logits.argmax(-1) == labels).sum())
        # Token t is predicted from the tokens before it. Shift the labels, not the logits: slicing
        # the logits copies rows x length x vocabulary floats (100 MB at batch 4 x 128 tokens of
        # SmolLM2) on every step; the last position, with nothing to predict, gets IGNORE instead.
        shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
        flat = logits.reshape(-1, logits.shape[-1])
        return F.cross_entropy(flat, shifted.reshape(-1), ignore_index=IGNORE, reduction="sum"), 0

    def _mean(self, loss_sum: float, count: int) -> float:
        import torch

        totals = torch.tensor([loss_sum, float(count)], device=self.accelerator.device, dtype=torch.float64)
        totals = self.accelerator.reduce(totals, "sum")
        return float(totals[0] / max(float(totals[1]), 1.0))

    def _evaluate(self, step: int, metrics: "_MetricsFile") -> dict | None:
        """Eval loss (and accuracy); keeps the best weights. Returns None when patience ran out."""
        result = self._eval_metrics()
        result["step"] = step
        metrics.write(result)
        self._check_finite("eval loss", result["eval_loss"], step)
        line = f"eval at step {step}: loss {result['eval_loss']:.4f}, perplexity {result['eval_perplexity']:.2f}"
        if "eval_accuracy" in result:
            line += f", accuracy {result['eval_accuracy']:.3f}"
        self._info(line)
        best = self.state["best_loss"]
        if best is None or result["eval_loss"] < best:
            self.state.update(best_loss=result["eval_loss"], best_step=step, bad_evals=0, best_eval=result)
            if self.main:
                checkpoint.save_best(self.out, self.unwrapped(), step)
        elif step > 0:
            self.state["bad_evals"] += 1
        patience = self.config.early_stopping_patience
        if patience and self.state["bad_evals"] >= patience:
            self._info(f"early stop: no better eval loss in {patience} evaluations (best at step "
                       f"{self.state['best_step']})")
            return None
        return result

    def _eval_metrics(self) -> dict:
        import torch

        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.accelerator.device)
        mine = self.evals[self.accelerator.process_index::self.accelerator.num_processes]
        size = self.config.batch_size
        with torch.no_grad():
            for start in range(0, len(mine), size):
                batch = self.batches.collate(mine[start:start + size], self.classify, packed=False)
                loss, correct = self._loss(batch)
                sums += torch.tensor([loss.item(), batch["count"], correct], dtype=torch.float64, device=sums.device)
        self.model.train()
        sums = self.accelerator.reduce(sums, "sum")
        loss = float(sums[0] / max(float(sums[1]), 1.0))
        result = {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0))}
        if self.classify:
            result["eval_accuracy"] = float(sums[2] / max(float(sums[1]), 1.0))
        return result

    def _log(self, step: int, loss: float, metrics: "_MetricsFile") -> dict:
        seconds = max(self.state["seconds"], 1e-9)
        record = {"step": step, "epoch": round(step * self.batches.per_step / len(self.batches.examples), 4),
                  "loss": loss, "learning_rate": self.scheduler.get_last_lr()[0],
                  "tokens_per_second": round(self.state["tokens"] / seconds, 1)}
        metrics.write(record)
        if step % self.every["log"] == 0 or step == self.total:
            eta = seconds / max(step, 1) * (self.total - step)
            self._info(f"step {step}/{self.total}: loss {loss:.4f}, lr {record['learning_rate']:.2e}, "
                       f"{record['tokens_per_second']:.0f} tokens/s, eta {eta:.0f} s")
        return record

    def _checkpoint_due(self, step: int) -> bool:
        """Every --save-every steps; by default at evaluations, at most once per AUTO_SAVE_SECONDS.

        A full model's checkpoint (weights and optimizer) takes seconds to write: saved at every
        evaluation of a short run it halved training speed (benchmarks/finetune_vs_trainer.py).
        """
        if step >= self.total or step % self.every["save"]:
            return False
        return bool(self.config.save_every) or time.monotonic() - self._last_save >= AUTO_SAVE_SECONDS

    def _check_finite(self, what: str, value: float, step: int) -> None:
        """Stop a run whose loss overflowed: every later step, and the saved model, would be NaN.

        Raises:
            GptcliError: naming the step and the fix.
        """
        if not math.isfinite(value):
            self._diverged(f"the {what} at step {step} is {value}")

    def _diverged(self, what: str) -> None:
        # The checkpoints keep the old learning rate (optimizer and scheduler state): a lower one
        # needs a fresh start, which a folder holding checkpoints refuses without --resume.
        where = " in a new --output" if checkpoint.latest(self.out) else ""
        raise GptcliError(f"training diverged: {what}, so no model was saved; lower --learning-rate "
                          f"(it was {self.config.learning_rate:g}) and start again{where}")

    def _weights_finite(self) -> bool:
        import torch

        params = [p.detach() for p in self.unwrapped().parameters() if p.requires_grad]
        return bool(torch.stack([torch.isfinite(p).all() for p in params]).all()) if params else True

    def _checkpoint(self, metrics: "_MetricsFile", rng: dict | None = None) -> None:
        self._last_save = time.monotonic()
        if not self.main:
            return
        if not self._weights_finite():  # a step's loss was finite, but its update overflowed
            self._diverged(f"the trainable weights at step {self.state['step']} are not finite")
        self.state["metrics_bytes"] = metrics.size()
        checkpoint.save(self.out, self.state["step"], self.unwrapped(), self.optimizer, self.scheduler,
                        rng or checkpoint.rng_state(), self.state)

    def _resume(self) -> None:
        folder = checkpoint.latest(self.out)
        check_same_run(checkpoint.saved_state(folder).get("run"), self.state["run"], self.out)
        self.state.update(checkpoint.restore(folder, self.unwrapped(), self.optimizer, self.scheduler))
        self._info(f"resuming from {folder} (step {self.state['step']} of {self.total})")

    def _interrupted(self) -> None:
        if self.main:
            metrics = _MetricsFile(self.out / "metrics.jsonl", None, True)
            self._checkpoint(metrics, self._step_rng)
            self._info(f"interrupted: checkpoint saved at step {self.state['step']} in {self.out}/checkpoints; "
                       f"add --resume to the same command to continue")

    def _summary(self, summary: Summary, metrics: "_MetricsFile") -> Summary:
        summary.steps, summary.seconds, summary.tokens = self.state["step"], self.state["seconds"], self.state["tokens"]
        summary.best_step, summary.best_eval = self.state["best_step"], self.state.get("best_eval")
        summary.first_eval = self.state["first_eval"]
        summary.used = {"eval_every": self.every["eval"] if self.evals else 0,
                        "log_every": self.every["log"], "mixed_precision": self.accelerator.mixed_precision,
                        "device": str(self.accelerator.device)}
        return summary

    def _info(self, line: str) -> None:
        if self.main:
            console.info(line)


class _MetricsFile:
    """metrics.jsonl, one flushed line per record; cut back to a checkpoint's length on resume."""

    def __init__(self, path: Path, keep_bytes: int | None, main: bool):
        self.path, self.main, self._handle = path, main, None
        if main and keep_bytes is not None and path.exists():
            with open(path, "r+b") as handle:
                handle.truncate(keep_bytes)

    def __enter__(self) -> "_MetricsFile":
        if self.main:
            self._handle = open(self.path, "a", encoding="utf-8")
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.close()

    def write(self, record: dict) -> None:
        if self._handle is not None:
            # JSON has no NaN or Infinity: a diverged value is written as null, so every line parses.
            clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
            try:
                self._handle.write(json.dumps(clean, allow_nan=False) + "\n")
                self._handle.flush()
            except OSError as exc:
                self._abandon()
                kept = checkpoint.latest(self.path.parent)
                raise GptcliError(f"cannot write {self.path}: {exc.strerror}; free some space, then rerun with "
                                  f"--resume" + (f" (it continues from {kept.name})" if kept else "")) from None

    def _abandon(self) -> None:
        """Close after a failed write: closing flushes the rest, which fails again; --resume cuts it off."""
        handle, self._handle = self._handle, None
        with contextlib.suppress(OSError):
            handle.close()

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


AUTO_SAVE_SECONDS = 120  # without --save-every: a crash costs at most about two minutes of training


def _periods(config: TrainConfig, total: int) -> dict:
    evaluate = config.eval_every or max(1, total // 10)
    return {"eval": evaluate, "save": config.save_every or evaluate, "log": config.log_every or max(1, total // 50)}


def _optimizer(model, config: TrainConfig, total: int):
    """AdamW over the trainable weights; linear warmup, then linear decay to zero."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    try:
        # One fused kernel per step instead of a loop over tensors: on CPU it made full fine-tuning of
        # SmolLM2 much faster (benchmarks/finetune_vs_trainer.py); plain AdamW where it is missing.
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = int(round(config.warmup * total)) if config.warmup < 1 else int(config.warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# Settings that decide what each step sees and trains: a resumed run must share them all.
RUN_SETTINGS = ("model", "task", "method", "lora_r", "lora_alpha", "load_in_4bit", "max_length", "packing",
                "train_on_prompt", "batch_size", "grad_accum", "seed", "num_processes")


def run_identity(config: TrainConfig, examples: list) -> dict:
    """What makes a checkpoint belong to this run: its settings and a digest of its training tokens."""
    import hashlib

    digest = hashlib.sha256()
    for example in examples:
        digest.update(repr((example.input_ids, example.labels)).encode())
    identity = {name: getattr(config, name) for name in RUN_SETTINGS}
    identity["training_data"] = f"{len(examples)} examples, sha256 {digest.hexdigest()[:16]}"
    return identity


def check_same_run(saved: dict | None, current: dict, out: Path) -> None:
    """Refuse --resume from a checkpoint another run wrote (other model, data or batch settings).

    Raises:
        UsageError: naming the first setting that differs.
    """
    if saved is None:
        return  # written before checkpoints carried their run's identity
    for name, value in current.items():
        if saved.get(name) != value:
            flag = "--data" if name == "training_data" else "--" + name.replace("_", "-")
            raise UsageError(f"--resume: the checkpoint in {out} is from another run ({flag} was "
                             f"{saved.get(name)!r}, now {value!r}); resume with the same settings, "
                             f"or train into a new --output")
