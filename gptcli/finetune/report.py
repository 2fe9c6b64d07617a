"""What a run leaves to read: loss.png (train and eval loss by step) and a README.md model card.

metrics.jsonl itself is written as training goes (``loop._MetricsFile``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gptcli.finetune.config import TrainConfig


def read_metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_report(out: Path, config: TrainConfig, lm, prepared, summary, into: Path | None = None) -> None:
    """loss.png and README.md from the metrics in ``out``, written into ``into`` (default: ``out``)."""
    into = into or out
    records = read_metrics(out)
    plot_losses(records, into / "loss.png")
    (into / "README.md").write_text(model_card(config, lm, prepared, summary), encoding="utf-8")


def plot_losses(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and none opened
    import matplotlib.pyplot as plt

    # A diverged value is null in metrics.jsonl: no point to plot.
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in records if r.get("eval_loss") is not None]
    figure, axes = plt.subplots(figsize=(7, 4))
    if train:
        axes.plot(*zip(*train), label="train loss", linewidth=1)
    if evals:
        axes.plot(*zip(*evals), "o-", label="eval loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def model_card(config: TrainConfig, lm, prepared, summary) -> str:
    from gptcli.finetune.save import base_spec

    lines = [f"# Fine-tuned from {base_spec(config)}", "",
             f"Made with `gptcli finetune` ({_method(config)}), {summary.steps} steps of {summary.total_steps}"
             f"{' (stopped early)' if summary.stopped_early else ''} in {summary.seconds:.0f} s "
             f"({summary.tokens / max(summary.seconds, 1e-9):.0f} tokens/s).", "",
             "## Data", "",
             f"- training: `{config.data}`, {len(prepared.train)} rows ({prepared.train[0].format} format)",
             f"- eval: {_eval_source(config, prepared)}", ""]
    lines += _results(summary) + _evaluation(config, prepared, summary) + _usage(config)
    lines += ["", "## Hyper-parameters", "", "| setting | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in used_settings(config, prepared, summary).items()
              if key not in ("data", "output")]
    return "\n".join(lines) + "\n"


def used_settings(config: TrainConfig, prepared, summary) -> dict:
    """The settings as the run used them: a default model or held-out share, and 0 or "auto"
    settings, show what they turned into, marked "(auto)"."""
    from gptcli.finetune.save import base_spec

    given = config.to_dict()
    chosen = dict(summary.used, model=base_spec(config))
    if not config.eval_data:
        chosen["eval_fraction"] = prepared.eval_fraction
    settings = {}
    for key, value in given.items():
        used = chosen.get(key, value)
        settings[key] = used if used == value or value not in (None, 0, "auto") else f"{used} (auto)"
    return settings


def _method(config: TrainConfig) -> str:
    if config.method == "lora":
        return (f"LoRA r={config.lora_r}, alpha={config.lora_alpha}, dropout={config.lora_dropout}"
                f"{', 4-bit base (QLoRA)' if config.load_in_4bit else ''}")
    return "full fine-tuning"


def _eval_source(config: TrainConfig, prepared) -> str:
    if config.eval_data:
        return f"`{config.eval_data}`, {len(prepared.eval)} rows"
    if prepared.eval:
        return f"{len(prepared.eval)} rows held out of the training file (seed {config.seed})"
    return "none (too few rows for a held-out split; give --eval-data or --eval-fraction)"


def _results(summary) -> list[str]:
    lines = ["## Results", ""]
    if summary.best_eval is None:
        return lines + ["No eval set: the output holds the weights of the last step.", ""]
    best = summary.best_eval
    lines.append(f"The output holds the weights of step {summary.best_step}, the best eval loss.")
    lines.append("")
    lines.append("| | eval loss | perplexity | accuracy |")
    lines.append("|---|---|---|---|")
    if summary.first_eval:
        lines.append(_row("before training", summary.first_eval))
    lines.append(_row(f"best (step {summary.best_step})", best))
    return lines + [""]


def _row(name: str, result: dict) -> str:
    accuracy = result.get("eval_accuracy")
    perplexity = result["eval_perplexity"]
    return (f"| {name} | {result['eval_loss']:.4f} | {perplexity:.2f} | "
            f"{'' if accuracy is None else f'{accuracy:.3f}'} |") if math.isfinite(perplexity) else f"| {name} | - | - | |"


def _evaluation(config: TrainConfig, prepared, summary) -> list[str]:
    """Perplexity on the eval rows, base and tuned, as `gptcli eval perplexity` measures it, and how to rerun it."""
    from gptcli.finetune.evaluate import COVERS
    from gptcli.finetune.save import EVAL_FILE, base_spec

    base, tuned = summary.perplexity.get("base"), summary.perplexity.get("tuned")
    if base is None and tuned is None:
        return []
    lines = ["## Evaluation", "",
             f"Perplexity on the {len(prepared.eval)} eval rows (kept in `{EVAL_FILE}`), measured by "
             f"`gptcli eval perplexity` (float32): the model's mean loss per scored token and its exp. "
             f"It scores {COVERS[prepared.eval[0].format]}. No row is cut at --max-length, so it can "
             f"differ from the training eval loss above.", "",
             "| model | rows | tokens scored | mean loss | perplexity |", "|---|---|---|---|---|"]
    for name, figures in (("base, before training", base), ("this model", tuned)):
        if figures is not None:
            lines.append(f"| {name} | {figures.texts} | {figures.tokens} | {figures.mean_loss:.4f} | "
                         f"{figures.perplexity:.4f} |")
    data = f"{config.output}/{EVAL_FILE}"
    adapter_only = config.method == "lora" and not config.merge
    model = f"{base_spec(config)} --adapter {config.output}/adapter" if adapter_only else str(config.output)
    return lines + ["", "To measure it again:", "", "```sh",
                    f"gptcli eval perplexity --model {model} --data {data} --dtype float32",
                    f"gptcli eval perplexity --model {base_spec(config)} --data {data} --dtype float32  # the base",
                    "```", ""]


def _usage(config: TrainConfig) -> list[str]:
    command = "classify" if config.task == "classify" else "generate"
    lines = ["## Use", "", "```sh"]
    if config.merge or config.method == "full":
        lines.append(f"gptcli {command} --model {config.output} ...")
    if config.method == "lora":
        lines.append(f"gptcli {command} --model {config.model or 'smollm2'} --adapter {config.output}/adapter ...")
    return lines + ["```"]
