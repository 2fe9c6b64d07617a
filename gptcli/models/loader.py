"""The one function that turns a --model spec into a loaded (model, tokenizer).

Every command calls ``load_model``; it is the only place in gptcli that calls
``from_pretrained``, besides the one-time GGUF conversion.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptcli import console
from gptcli.errors import GptcliError, InputError, UsageError
from gptcli.models import kinds, safety
from gptcli.models.placement import (LOAD_OUT_OF_MEMORY_HINT, Placement, choose_placement, is_out_of_memory,
                                     out_of_memory_error)
from gptcli.models.resolve import ModelSource, resolve

TRANSFORMERS, LLAMACPP = "transformers", "llama.cpp"
ENGINES = (TRANSFORMERS, LLAMACPP)


@dataclass(frozen=True)
class LoadOptions:
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    adapter: str | None = None
    # For `gptcli finetune`: load with a fresh classification head over these labels
    # (AutoModelForSequenceClassification), and/or quantized to 4 bits (QLoRA, CUDA only).
    class_labels: tuple[str, ...] | None = None
    load_in_4bit: bool = False
    allow_pickle: bool = False  # load .bin/.pt weights (pickles can run code): only when the user says so
    for_training: bool = False  # finetune: plain trainable weights, never the packed 4-bit inference layers
    engine: str = TRANSFORMERS  # what runs the model: transformers, or llama.cpp for a GGUF file (engine/)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    kind: str
    source: ModelSource
    placement: Placement
    load_seconds: float
    name: str = ""
    import_seconds: float = 0.0
    processor: Any = None  # an image-text-to-text model's processor (images to pixels and image tokens)
    native: Any = None  # with --engine llama.cpp: llama.cpp's model (``model`` is then config-only, no weights)

    @property
    def takes_images(self) -> bool:
        return self.processor is not None

    @property
    def device(self):
        if self.native is not None:  # llama.cpp computes on the CPU; the transformers model is config-only
            import torch

            return torch.device("cpu")
        return self.model.device

    @property
    def context_length(self) -> int | None:
        """The most tokens the model attends to, from its config (None when it has no limit)."""
        config = self.model.config
        if hasattr(config, "get_text_config"):  # a vision-language model's limit is its text decoder's
            config = config.get_text_config(decoder=True)
        for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
        limit = getattr(self.tokenizer, "model_max_length", None)
        return limit if isinstance(limit, int) and 0 < limit < 10_000_000 else None


def load_model(options: LoadOptions, accept: tuple[str, ...], command: str, images: bool = False) -> LoadedModel:
    """Resolve, check and load a model for ``command``.

    Args:
        options: what the user asked for (spec, device, dtype, remote code, adapter).
        accept: the model kinds (see ``kinds``) the command can work with.
        command: the command name, for error messages.
        images: the input holds images, so the model must be able to see them.

    Raises:
        InputError: the spec is not a usable model, of a kind the command cannot use, or text-only
            when ``images`` (checked from the config, before any weights load).
        UsageError: bad device/dtype, or remote code needed but not allowed.
        GptcliError: the model cannot be fetched (offline) or fails to load.
    """
    imports_started = time.perf_counter()
    _import_quietly()
    import_seconds = time.perf_counter() - imports_started
    started = time.perf_counter()
    if options.engine == LLAMACPP:
        _check_llamacpp_options(options)
    placement = choose_placement(options.device, options.dtype)
    source = resolve(options.model)
    adapter = options.adapter
    if source.adapter_of is not None:  # a LoRA output folder given as --model: load its base + adapter
        adapter = adapter or str(source.folder)
        source = resolve(source.adapter_of)
    location, extra = _location(source)
    if source.folder is not None:
        safety.check_no_pickle(Path(location), "the model folder", options.allow_pickle)
    if adapter:
        _check_adapter(adapter, options.allow_pickle)
    config = _load_config(location, extra, options, source)
    kind = kinds.detect_kind(config)
    if kind not in accept:
        wanted = " or ".join(kinds.KIND_NAMES[k] for k in accept)
        raise InputError(f"{source.spec} is {kinds.KIND_NAMES[kind]}; `gptcli {command}` needs {wanted}")
    vision = kind == kinds.CAUSAL_LM and kinds.takes_images(config) and not options.class_labels
    if images and not vision:
        raise InputError(f"{source.spec} reads text only, and the input has images; pass --model with "
                         f"{kinds.VISION_MODELS_HINT}")
    if options.engine == LLAMACPP:
        _check_llamacpp_model(source, adapter, kind)
    native = None
    with console.status(f"Loading {source.describe()} ..."):
        processor = _load_processor(location, extra, options, source) if vision else None
        tokenizer = processor.tokenizer if processor else _load_tokenizer(location, extra, options, source)
        auto_cls = kinds.auto_class(kinds.SEQUENCE_CLASSIFIER if options.class_labels else kind, images=vision)
        if options.engine == LLAMACPP:
            from gptcli.engine.llamacpp_native import load as load_native

            native_file, weights = _native_file(source, options.dtype)
            model, native = _config_only(auto_cls, location, config), load_native(native_file)
            placement = Placement("cpu", "float32", f"engine llama.cpp on the CPU ({source.gguf.name}'s {weights}; "
                                  "transformers holds the config only)", engine=LLAMACPP)
        else:
            model = _load_weights(auto_cls, location, extra, options, placement, source)
        if adapter:
            model = _attach_adapter(model, adapter, options.allow_pickle)
        packed_note = _pack_4bit(model, location, options, placement, source, adapter)
    model.eval()
    seconds = time.perf_counter() - started
    console.log(f"loaded {source.describe()} as {kind} in {seconds:.2f} s "
                f"(after {import_seconds:.2f} s of imports): {placement.reason}{packed_note}")
    return LoadedModel(model, tokenizer, kind, source, placement, seconds, name=source.spec,
                       import_seconds=import_seconds, processor=processor, native=native)


def _check_llamacpp_options(options: LoadOptions) -> None:
    """--engine llama.cpp runs on the CPU, a GGUF file's own weight types or a copy recast to a float type."""
    from gptcli.models.gguf_recast import FILE_TYPES

    if options.device not in ("auto", "cpu"):
        raise UsageError("--engine llama.cpp runs on the CPU; drop --device or use --engine transformers")
    if options.dtype != "auto" and options.dtype not in FILE_TYPES:
        raise UsageError(f"--engine llama.cpp takes --dtype auto (the GGUF's own weight types), "
                         f"{', '.join(FILE_TYPES)}; not {options.dtype}: use --engine transformers for it")


def _check_llamacpp_model(source: ModelSource, adapter: str | None, kind: str) -> None:
    """--engine llama.cpp runs a GGUF file as it is: refuse what it cannot honour."""
    if source.gguf is None:
        raise UsageError(f"--engine llama.cpp runs GGUF files; {source.spec} is not one: pass --model FILE.gguf "
                         "or use --engine transformers")
    if kind != kinds.CAUSAL_LM:
        raise UsageError(f"--engine llama.cpp runs causal language models; {source.spec} is "
                         f"{kinds.KIND_NAMES[kind]}: use --engine transformers")
    if adapter:
        raise UsageError("--engine llama.cpp cannot apply --adapter; use --engine transformers")


def _config_only(auto_cls, location: str, config):
    """The model's class with its config and generation settings but no weights (on the meta device):
    what the services read about a model, when llama.cpp holds the weights."""
    import torch
    from transformers import GenerationConfig

    with torch.device("meta"):
        model = auto_cls.from_config(config)
    try:
        model.generation_config = GenerationConfig.from_pretrained(location)
    except OSError:  # no generation_config.json: the one from_config made from the config stays
        pass
    return model


def _native_file(source: ModelSource, dtype: str) -> tuple[Path, str]:
    """The GGUF file llama.cpp runs, and its weights in words: the file (its output projection in
    bfloat16 where that is faster and more exact: with_bfloat16_output), or its copy in ``dtype``."""
    from gptcli.models.gguf_recast import recast_gguf, with_bfloat16_output

    if dtype != "auto":
        return recast_gguf(source.gguf, dtype), f"weights in {dtype}"
    path = with_bfloat16_output(source.gguf)
    return path, "own weight types" if path == source.gguf else "own layer types, output projection in bfloat16"


def _import_quietly() -> None:
    """Import the model stack, and keep its progress bars and advice off our stderr."""
    # transformers' GGUF reader draws a raw tqdm bar, which only this variable silences, and
    # tqdm reads it once, at import: set it before the first import of the stack.
    os.environ.setdefault("TQDM_DISABLE", "1")
    import huggingface_hub
    import transformers
    import transformers.modeling_utils  # noqa: F401  (pays transformers' lazy imports here, not in the load)

    transformers.utils.logging.disable_progress_bar()  # its log level is gptcli.quiet's (-v shows more)
    huggingface_hub.utils.disable_progress_bars()


def _location(source: ModelSource) -> tuple[str, dict]:
    if source.gguf is not None:
        from gptcli.models.convert import converted_folder

        return str(converted_folder(source.gguf)), {}
    if source.folder is not None:
        return str(source.folder), {}
    return source.hub_id, {}


def _load_config(location: str, extra: dict, options: LoadOptions, source: ModelSource):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(location, trust_remote_code=options.trust_remote_code, **extra)
    except Exception as exc:  # transformers raises ValueError/OSError/KeyError variously
        raise _explain_load_failure(exc, source, "config") from exc


def _load_tokenizer(location: str, extra: dict, options: LoadOptions, source: ModelSource):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=options.trust_remote_code, **extra)
    except Exception as exc:
        raise _explain_load_failure(exc, source, "tokenizer") from exc
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # Batching needs a pad token; the attention mask hides it, so reusing EOS is safe here.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_processor(location: str, extra: dict, options: LoadOptions, source: ModelSource):
    """A vision-language model's processor; its tokenizer is the model's tokenizer."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(location, trust_remote_code=options.trust_remote_code, **extra)
    except Exception as exc:
        if "torchvision" in str(exc).lower():  # Qwen2-VL's kind: transformers builds their video processor with it
            raise UsageError(f"the processor of {source.describe()} needs torchvision, which is not installed; "
                             f"{_torchvision_command()}") from exc
        raise _explain_load_failure(exc, source, "processor") from exc
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or getattr(processor, "image_processor", None) is None:
        raise InputError(f"cannot load the processor of {source.describe()}: it has no tokenizer or image "
                         f"processor (processor_config.json / preprocessor_config.json)")
    if not getattr(tokenizer, "chat_template", None) and getattr(processor, "chat_template", None):
        tokenizer.chat_template = processor.chat_template  # one renderer for text and image prompts
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return processor


def _torchvision_command() -> str:
    """How to install the torchvision release built for this torch (its minor version is torch's + 15)."""
    import torch

    version = torch.__version__
    major_minor = version.split("+")[0].split(".")[:2]
    pin = f"torchvision==0.{int(major_minor[1]) + 15}.*" if major_minor[0] == "2" else "torchvision"
    index = " --index-url https://download.pytorch.org/whl/cpu" if "+cpu" in version else ""
    return f"pip install '{pin}'{index} (the build for torch {version})"


def _load_weights(auto_cls, location: str, extra: dict, options: LoadOptions, placement: Placement,
                  source: ModelSource):
    kwargs: dict[str, Any] = {"dtype": placement.dtype, "trust_remote_code": options.trust_remote_code}
    kwargs.update(_training_kwargs(options))
    if not options.allow_pickle:
        kwargs["use_safetensors"] = True  # never fall back to unpickling .bin weights, local or from the hub
    if placement.device.startswith("cuda"):
        # accelerate places the weights: spread over all GPUs for "cuda", or onto the one named.
        kwargs["device_map"] = "auto" if placement.device == "cuda" else placement.device
    try:
        model = auto_cls.from_pretrained(location, **kwargs, **extra)
    except Exception as exc:
        raise _explain_load_failure(exc, source, "weights") from exc
    if "device_map" not in kwargs and placement.device != "cpu":
        model = model.to(placement.device)
    return model


def _pack_4bit(model, location: str, options: LoadOptions, placement: Placement, source: ModelSource,
               adapter: str | None) -> str:
    """--dtype int4: keep a 4-bit GGUF model's layers 4-bit (int4.py); say so for --verbose.

    Raises:
        UsageError: the model has no stored 4-bit layers, or needs ordinary ones (adapter, training).
    """
    if not placement.int4:
        return ""
    if adapter or options.for_training:
        raise UsageError("--dtype int4 is for inference on a model without --adapter; use --dtype auto")
    from gptcli.models import int4

    count = int4.pack_stored_4bit_layers(model, Path(location)) if source.gguf is not None else 0
    if not count:
        raise UsageError(f"--dtype int4 needs a 4-bit GGUF model (Q4_0, Q4_1, Q4_K, like the packaged SmolLM2); "
                         f"{source.spec} has no 4-bit layers: use --dtype auto")
    return f"; {count} linear layers kept 4-bit as in the GGUF"


def _training_kwargs(options: LoadOptions) -> dict[str, Any]:
    """from_pretrained arguments for a new classification head or 4-bit weights (finetune only)."""
    kwargs: dict[str, Any] = {}
    if options.class_labels:
        labels = list(options.class_labels)
        # The base may have no head or one for other labels: a fresh head replaces it.
        kwargs.update(num_labels=len(labels), id2label=dict(enumerate(labels)),
                      label2id={name: i for i, name in enumerate(labels)}, ignore_mismatched_sizes=True)
    if options.load_in_4bit:
        import torch
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    return kwargs


def _check_adapter(adapter: str, allow_pickle: bool) -> None:
    """Refuse a missing or pickle-only adapter before the base model's weights are loaded."""
    path = Path(adapter).expanduser()
    shown = adapter if len(adapter) <= 80 else adapter[:77] + "..."
    try:
        found = (path / "adapter_config.json").is_file()
    except OSError as exc:  # a name too long for the file system
        raise InputError(f"--adapter {shown}: {exc.strerror}; give the adapter folder that `gptcli finetune` "
                         f"wrote (OUT/adapter)") from None
    if not found:
        raise InputError(f"--adapter {shown}: no adapter_config.json there; give the adapter folder "
                         f"that `gptcli finetune` wrote (OUT/adapter)")
    safety.check_no_pickle(path, "the adapter", allow_pickle)


def _attach_adapter(model, adapter: str, allow_pickle: bool):
    from peft import PeftModel

    path = Path(adapter).expanduser()
    try:
        return PeftModel.from_pretrained(model, str(path))
    except Exception as exc:
        if is_out_of_memory(exc):
            raise out_of_memory_error(f"loading the adapter {adapter}", exc, LOAD_OUT_OF_MEMORY_HINT) from exc
        raise InputError(f"--adapter {adapter} does not fit this model ({_first_line(exc)}); "
                         f"load it with the base model it was trained on") from None


def _explain_load_failure(exc: Exception, source: ModelSource, part: str) -> GptcliError:
    """The error to raise for a failed load; raised ``from exc``, so GPTCLI_DEBUG=1 shows the cause."""
    if is_out_of_memory(exc):  # the model is too big for this machine, not a bad model
        return out_of_memory_error(f"loading the {part} of {source.describe()}", exc, LOAD_OUT_OF_MEMORY_HINT)
    text = str(exc)
    if part == "weights" and "safetensors" in text.lower() and source.hub_id is not None:
        return UsageError(f"{source.hub_id} publishes no safetensors weights, only pickle files, which can run "
                          f"code when loaded; rerun with --allow-pickle if you trust the source")
    if "trust_remote_code" in text:
        return UsageError(f"{source.spec} needs to run its own Python code to load; "
                          f"if you trust it, rerun with --trust-remote-code")
    if source.hub_id is not None and _is_offline_failure(exc):
        return GptcliError(f"cannot fetch {source.hub_id}: it is not in the local Hugging Face cache and "
                           f"the hub is unreachable (offline?); connect once, or run `hf download "
                           f"{source.hub_id}`, or pass a local folder with --model")
    if source.hub_id is not None and ("is not a valid model identifier" in text or "404" in text
                                      or "Repository Not Found" in text):
        return InputError(f"{source.hub_id} is not a model on the hub (check the spelling), "
                          f"nor a local path")
    where = source.describe()
    return InputError(f"cannot load the {part} of {where}: {_first_line(exc)}")


def _is_offline_failure(exc: Exception) -> bool:
    text = str(exc).lower()
    markers = ("offline", "couldn't connect", "connection", "cannot find the requested files",
               "local_files_only", "we couldn't connect", "name or service not known", "max retries")
    return any(marker in text for marker in markers)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:240] if lines else type(exc).__name__
