"""The fine-tuning recipe: a typed config, then setup / train / save.

This is the one module that creates the ``Accelerator``: it places the model,
picks mixed precision and joins the processes that `accelerate launch`,
torchrun or ``--num-processes`` started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gptcli import console
from gptcli.errors import UsageError
from gptcli.finetune import data as fmt
from gptcli.finetune.config import TrainConfig

# LoRA target modules by architecture: the attention projections, as in the LoRA paper.
LORA_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"], "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"], "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"], "phi3": ["qkv_proj", "o_proj"],
    "gpt2": ["c_attn"], "gpt_neox": ["query_key_value"], "opt": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "bert": ["query", "key", "value"], "roberta": ["query", "key", "value"], "distilbert": ["q_lin", "k_lin", "v_lin"],
}
INSPECT_COUNT = 3


@dataclass
class Prepared:
    """The validated data of a run, before any model is loaded."""

    train: list[fmt.Row]
    eval: list[fmt.Row]
    labels: list[str] = field(default_factory=list)
    eval_fraction: float | None = None  # the share held out of --data (None: a separate --eval-data)


def prepare(config: TrainConfig) -> Prepared:
    """Read and validate the data and the options that depend on this machine. No model yet."""
    rows = fmt.load_rows(config.data, config.task)
    fraction = None
    if config.eval_data:
        train, evals = rows, fmt.load_rows(config.eval_data, config.task)
    else:
        fraction = fmt.eval_fraction_for(len(rows), config.eval_fraction)
        train, evals = fmt.split_rows(rows, fraction, config.seed)
    labels = fmt.labels_of(train) if config.task == "classify" else []
    if config.task == "classify" and len(labels) < 2:
        raise UsageError(f"{config.data}: --task classify needs at least two different labels, found {labels}")
    check_machine(config)
    return Prepared(train, evals, labels, fraction)


def check_machine(config: TrainConfig) -> None:
    """Options this machine cannot honour, refused before the model loads."""
    import importlib.util

    import torch

    if config.load_in_4bit:
        on_cuda = torch.cuda.is_available() and config.device != "cpu"
        if not on_cuda or importlib.util.find_spec("bitsandbytes") is None:
            raise UsageError("--load-in-4bit needs a CUDA GPU and the bitsandbytes package "
                             "(pip install bitsandbytes); drop it to train in full precision here")
        if config.method != "lora":
            raise UsageError("--load-in-4bit trains a LoRA adapter on frozen 4-bit weights: use --method lora")
    if config.mixed_precision in ("bf16", "fp16") and not torch.cuda.is_available() and config.device != "cpu":
        console.warn(f"--mixed-precision {config.mixed_precision} on CPU: autocast is used, which can be slow")


def run(config: TrainConfig, inspect: bool = False) -> Path | None:
    """Validate, then either show the data (--inspect), launch N processes, or train here.

    Returns the output folder (None for --inspect and in non-main processes).
    """
    from gptcli import launch

    if launch.launched_process():
        return launch.reported(lambda: _run(config, inspect))
    return _run(config, inspect)


def _run(config: TrainConfig, inspect: bool) -> Path | None:
    prepared = prepare(config)
    if inspect:
        _inspect(config, prepared)
        return None
    if config.num_processes > 1 and "LOCAL_RANK" not in os.environ:
        from gptcli.finetune import folder

        with folder.claimed(Path(config.output).expanduser(), config.resume):  # held for the children
            return launch(config)
    return train(config, prepared)


def _inspect(config: TrainConfig, prepared: Prepared) -> None:
    from gptcli import textio
    from gptcli.finetune import tokens

    lm = load_base(config, prepared.labels)
    encoded = encode(config, prepared.train, lm.tokenizer, prepared.labels)  # all rows: the cut count is for all
    for number, example in enumerate(encoded.examples[:INSPECT_COUNT], start=1):
        if config.task == "classify":
            textio.write_stdout(tokens.show_labelled(example, lm.tokenizer, number, prepared.labels[example.labels[0]]))
        else:
            textio.write_stdout(tokens.show(example, lm.tokenizer, number))
    _report_cut(encoded, config)


def launch(config: TrainConfig) -> Path:
    """Run this config in ``num_processes`` processes (torchrun: gloo on CPU, NCCL on GPUs)."""
    import tempfile

    import yaml

    from gptcli import launch as launcher

    child = TrainConfig(**{**config.to_dict(), "num_processes": 1})
    with tempfile.TemporaryDirectory(prefix="gptcli-launch-") as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(child.to_dict()), encoding="utf-8")
        launcher.run_torchrun(config.num_processes, ["finetune", "--config", str(path)], _child_environment(config),
                              Path(folder), "a training process",
                              "the checkpoints already saved are kept (rerun with --resume)")
    return Path(config.output)


def _child_environment(config: TrainConfig) -> dict:
    """The training processes' environment: on --device cpu they must not see the GPUs.

    Otherwise each rank picks the GPU of its own index, which fails when there are fewer
    GPUs than processes ("invalid device ordinal").
    """
    import torch

    from gptcli.finetune import folder

    env = dict(os.environ)
    env[folder.HELD_BY_PARENT] = str(Path(config.output).expanduser().resolve())
    if config.device == "cpu" or not torch.cuda.is_available():
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif config.num_processes > torch.cuda.device_count():
        raise UsageError(f"--num-processes {config.num_processes} needs as many GPUs; this machine has "
                         f"{torch.cuda.device_count()}: lower it, or add --device cpu to train in CPU processes")
    return env


def make_accelerator(config: TrainConfig):
    from accelerate import Accelerator

    import torch

    precision = config.mixed_precision
    if precision == "auto":
        on_gpu = torch.cuda.is_available() and config.device != "cpu"
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if on_gpu else "no"
    return Accelerator(mixed_precision=precision, cpu=config.device == "cpu")


def load_base(config: TrainConfig, labels: list[str]):
    """The base model in float32 on the CPU (accelerate moves it), through the one loader."""
    from gptcli.models import load_model
    from gptcli.models.kinds import CAUSAL_LM, EMBEDDING, SEQUENCE_CLASSIFIER
    from gptcli.models.loader import LoadOptions

    classify = config.task == "classify"
    options = LoadOptions(config.model, device="cpu", dtype="float32", trust_remote_code=config.trust_remote_code,
                          allow_pickle=config.allow_pickle,
                          class_labels=tuple(labels) if classify else None, load_in_4bit=config.load_in_4bit,
                          for_training=True)
    if config.load_in_4bit:
        options = LoadOptions(**{**options.__dict__, "device": "cuda", "dtype": "bfloat16"})
    accept = (EMBEDDING, SEQUENCE_CLASSIFIER, CAUSAL_LM) if classify else (CAUSAL_LM,)
    lm = load_model(options, accept=accept, command="finetune" + (" --task classify" if classify else ""))
    if lm.model.config.pad_token_id is None:  # classifiers over decoders find the last token by the pad id
        lm.model.config.pad_token_id = lm.tokenizer.pad_token_id
    return lm


def encode(config: TrainConfig, rows: list[fmt.Row], tokenizer, labels: list[str]):
    from gptcli.finetune import tokens

    if config.task == "classify":
        return tokens.encode_labelled(rows, tokenizer, config.max_length, labels)
    return tokens.encode_rows(rows, tokenizer, config.max_length, config.train_on_prompt)


def _report_cut(encoded, config: TrainConfig, what: str = "training") -> None:
    if encoded.cut:
        console.warn(f"{encoded.cut} {what} rows were longer than --max-length {config.max_length} "
                     f"tokens and were cut (their end, and its EOS, is not learned)")
    if encoded.dropped:
        console.warn(f"{encoded.dropped} {what} rows had no loss-carrying token left after the cut and "
                     f"were skipped; raise --max-length")


def setup_model(lm, config: TrainConfig):
    """Wrap the model for the method: a LoRA adapter (only it trains) or all weights."""
    model = lm.model
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if config.method == "full":
        model.train()
        return model
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if config.load_in_4bit:
        model = prepare_model_for_kbit_training(model, config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need an input grad
    model_type = model.config.model_type
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=LORA_TARGETS.get(model_type, "all-linear"),
                      fan_in_fan_out=model_type == "gpt2",  # GPT-2's Conv1D stores weights transposed
                      task_type=TaskType.SEQ_CLS if config.task == "classify" else TaskType.CAUSAL_LM)
    model = get_peft_model(model, lora)
    model.train()
    return model


def measure_base(config: TrainConfig, prepared: Prepared, lm, accelerator):
    """The base model's perplexity on the eval rows, for the model card (main process, before training).

    Measured here, on the model about to be trained, so the base is not loaded again after training;
    the model moves to the training device first, where accelerate would put it anyway.
    """
    from gptcli.finetune import evaluate

    if config.task == "classify" or not prepared.eval or not accelerator.is_main_process:
        return None
    if not getattr(lm.model, "is_loaded_in_4bit", False):  # a 4-bit model is placed on its GPU already
        lm.model.to(accelerator.device)
    training = lm.model.training
    lm.model.eval()  # no dropout while measuring
    try:
        return evaluate.measure(lm, prepared.eval, config.batch_size)
    finally:
        lm.model.train(training)


def train(config: TrainConfig, prepared: Prepared) -> Path | None:
    """Setup, train and save in this process (one of several under a launcher)."""
    import warnings

    # peft calls a transformers property deprecated in v5; the warning is theirs, not the user's.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    accelerator = make_accelerator(config)
    if not accelerator.is_main_process:
        console.set_verbose(False)
    out = Path(config.output).expanduser()
    with _claimed(out, config, accelerator):
        accelerator.wait_for_everyone()  # the main process holds the folder before any process uses it
        return _train_in(config, prepared, accelerator, out)


def _claimed(out: Path, config: TrainConfig, accelerator):
    """The main process locks and prepares the output folder; the others follow it."""
    import contextlib

    from gptcli.finetune import folder

    return folder.claimed(out, config.resume) if accelerator.is_main_process else contextlib.nullcontext()


def _train_in(config: TrainConfig, prepared: Prepared, accelerator, out: Path) -> Path | None:
    from accelerate.utils import set_seed

    from gptcli.finetune.loop import Trainer

    set_seed(config.seed)  # LoRA's initial weights come from here
    lm = load_base(config, prepared.labels)
    train_set = encode(config, prepared.train, lm.tokenizer, prepared.labels)
    eval_set = encode(config, prepared.eval, lm.tokenizer, prepared.labels)
    if accelerator.is_main_process:
        _report_cut(train_set, config)
        _report_cut(eval_set, config, "eval")
    if not train_set.examples:
        raise UsageError("no training rows are left after --max-length; raise it")
    base = measure_base(config, prepared, lm, accelerator)
    model = setup_model(lm, config)
    trainer = Trainer(config, accelerator, model, lm.tokenizer, train_set.examples, eval_set.examples, out)
    summary = trainer.train()
    if base is not None:
        summary.perplexity["base"] = base
    if accelerator.is_main_process:
        from gptcli.finetune.save import save_output

        save_output(config, prepared, lm, trainer, summary, out)
    accelerator.wait_for_everyone()
    return out if accelerator.is_main_process else None
