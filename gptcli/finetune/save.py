"""The output folder: best weights (adapter and/or merged model), tokenizer, config, report.

Everything here runs in the main process only, after training. It is all written into
a temporary folder inside the output first and renamed into place once complete, so
a full disk or a kill never leaves half a model that later commands would load.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from gptcli import console
from gptcli.errors import GptcliError
from gptcli.finetune import checkpoint, folder, report
from gptcli.finetune.config import TrainConfig

CARD = "README.md"  # renamed in last: a model card means the rest is in place
EVAL_FILE = "eval.jsonl"  # the eval rows, for `gptcli eval perplexity --data OUT/eval.jsonl`


def save_output(config: TrainConfig, prepared, lm, trainer, summary, out: Path) -> None:
    """Write the best weights and everything that describes them into ``out``, atomically.

    Raises:
        GptcliError: the disk is full or not writable; the output is left as it was.
    """
    temp = out / f"{folder.FINAL_TEMP}{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)
    try:
        temp.mkdir()
        _write_output(config, prepared, lm, trainer, summary, out, temp)
        _match_umask(temp)
        names = _move_into(temp, out)
    except Exception as exc:  # safetensors reports a full disk as its own SafetensorError, torch as RuntimeError
        if not _is_write_error(exc):
            raise
        raise GptcliError(_cannot_write(out, exc)) from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    console.info(f"saved to {out}: " + ", ".join(names))


def _write_output(config: TrainConfig, prepared, lm, trainer, summary, out: Path, temp: Path) -> None:
    model = trainer.unwrapped()
    if summary.best_step is not None:
        checkpoint.load_best(out, model)  # the output holds the best eval, not the last step
    dtype = _saved_dtype(lm)
    if config.method == "lora":
        _save_adapter(model, lm, config, temp / "adapter")
        if config.merge and config.load_in_4bit:
            _save_model(_merged_into_full_base(config, temp / "adapter"), lm.tokenizer, dtype, temp)
        elif config.merge:
            _save_model(model.merge_and_unload(), lm.tokenizer, dtype, temp)
    else:
        _save_model(model, lm.tokenizer, dtype, temp)
    _save_config(config, temp)
    _measure_output(config, prepared, trainer, summary, temp)
    report.write_report(out, config, lm, prepared, summary, into=temp)


def _measure_output(config: TrainConfig, prepared, trainer, summary, temp: Path) -> None:
    """The saved model's perplexity on the eval rows, loaded back as `gptcli eval perplexity` loads it.

    Loaded from the files just written (not the weights in memory), in float32 like training: the
    card's figure is what that command prints for this output, whatever dtype the weights were saved in.
    """
    from gptcli.finetune import evaluate
    from gptcli.models import load_model
    from gptcli.models.kinds import CAUSAL_LM

    if "base" not in summary.perplexity:
        return
    with open(temp / EVAL_FILE, "w", encoding="utf-8") as handle:
        for row in prepared.eval:
            handle.write(json.dumps(evaluate.eval_record(row), ensure_ascii=False) + "\n")
    device = trainer.accelerator.device  # "cpu:0" in CPU processes, which --device does not take
    options = output_load_options(config, temp, "cpu" if device.type == "cpu" else str(device))
    tuned = load_model(options, accept=(CAUSAL_LM,), command="finetune")
    summary.perplexity["tuned"] = evaluate.measure(tuned, prepared.eval, config.batch_size)


def output_load_options(config: TrainConfig, folder: Path, device: str = "auto"):
    """How the output in ``folder`` is loaded: the merged or full model, else the base and the adapter."""
    from gptcli.models.loader import LoadOptions

    common = dict(device=device, dtype="float32", trust_remote_code=config.trust_remote_code,
                  allow_pickle=config.allow_pickle)
    if config.method == "lora" and not config.merge:
        return LoadOptions(base_spec(config), adapter=str(folder / "adapter"), **common)
    return LoadOptions(str(folder), **common)


def _is_write_error(exc: Exception) -> bool:
    """A full or read-only disk, however the writer reports it (torch: "failed writing file")."""
    if isinstance(exc, OSError) or type(exc).__name__ == "SafetensorError":
        return True
    return isinstance(exc, RuntimeError) and "writ" in str(exc).lower()


def _cannot_write(out: Path, exc: Exception) -> str:
    reason = getattr(exc, "strerror", None) or (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    kept = checkpoint.latest(out)
    where = (f"checkpoint {kept.name} is intact, and --resume continues from it" if kept
             else "no checkpoint was due yet, so --resume trains again from step 0")
    return (f"cannot write the final model into {out}: {reason}; none of it was left in place. Free some space, "
            f"then rerun the same command with --resume ({where})")


def _match_umask(temp: Path) -> None:
    """Give every file the mode the user's umask gives new files.

    safetensors creates its files 0600 whatever the umask, while the tokenizer, config and card
    beside them get the usual 0644: a model shared through a group or a web server lost its weights.
    """
    probe = temp / ".umask-probe"
    probe.touch(mode=0o666)
    mode = probe.stat().st_mode & 0o777
    probe.unlink()
    for path in temp.rglob("*"):
        if path.is_file():
            os.chmod(path, mode)


def _move_into(temp: Path, out: Path) -> list[str]:
    """Rename each finished entry into ``out`` (replacing an earlier run's), the model card last."""
    names = sorted((p.name for p in temp.iterdir()), key=lambda name: (name == CARD, name))
    for name in names:
        target = out / name
        if target.is_dir():  # a folder cannot be renamed over another: move the old one aside first
            old = out / f"{folder.FINAL_TEMP}old-{name}-{os.getpid()}"
            os.replace(target, old)
            os.replace(temp / name, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp / name, target)
    return sorted(names)


def base_spec(config: TrainConfig) -> str:
    """How later commands find the base model again: an alias or hub id as given, a path made absolute."""
    from gptcli.models.resolve import DEFAULT_ALIAS

    if config.model is None:
        return DEFAULT_ALIAS
    path = Path(config.model).expanduser()
    return str(path.resolve()) if path.exists() else config.model


def _save_adapter(model, lm, config: TrainConfig, folder: Path) -> None:
    model.save_pretrained(str(folder))
    lm.tokenizer.save_pretrained(str(folder))
    # Point the adapter at the base as the user named it (peft wrote the converted cache folder),
    # so `--model OUT/adapter` finds it again. Set after saving: peft would try to read it as a folder.
    path = folder / "adapter_config.json"
    adapter_config = json.loads(path.read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = base_spec(config)
    path.write_text(json.dumps(adapter_config, indent=2), encoding="utf-8")


def _merged_into_full_base(config: TrainConfig, adapter: Path):
    """QLoRA: the adapter merged into the base loaded again unquantized (merging into 4-bit
    weights would round the update away), so the output is a plain model like any other."""
    from peft import PeftModel

    from gptcli.models import load_model
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.models.loader import LoadOptions

    console.info("merging the adapter into the unquantized base model")
    base = load_model(LoadOptions(config.model, device="cpu", dtype="float32",
                                  trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle),
                      accept=(CAUSAL_LM,), command="finetune")
    return PeftModel.from_pretrained(base.model, str(adapter)).merge_and_unload()


def _save_model(model, tokenizer, dtype, out: Path) -> None:
    model.config.use_cache = True  # training switched it off; generation wants it back
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _saved_dtype(lm):
    """The dtype the base was stored in (training ran in float32); None keeps float32."""
    import torch

    config_file = Path(str(getattr(lm.model, "name_or_path", ""))) / "config.json"
    try:
        stored = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = stored.get("dtype") or stored.get("torch_dtype")
    return getattr(torch, name, None) if name in ("float32", "bfloat16", "float16") else None


def _save_config(config: TrainConfig, out: Path) -> None:
    import yaml

    text = "# the effective settings of this run: rerun with `gptcli finetune --config config.yaml`\n"
    (out / "config.yaml").write_text(text + yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
