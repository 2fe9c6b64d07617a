"""Hostile files: pickled weights, chat templates that reach for Python, paths in data, secrets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

MARKER_NAME = "pwned"


class _Payload:
    """Unpickling this calls os.system: the kind of file --allow-pickle exists to keep out."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _model_copy(source: Path, folder: Path) -> Path:
    """The tiny model's config and tokenizer, without its weights."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    return folder


@pytest.fixture
def malicious(tiny_llama, tmp_path) -> tuple[Path, Path]:
    import pickle

    folder = _model_copy(tiny_llama, tmp_path / "evil")
    marker = tmp_path / MARKER_NAME
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    return folder, marker


def test_pickle_weights_are_refused_without_allow_pickle(cli, malicious):
    folder, marker = malicious
    result = cli("generate", "hello", "-m", folder, "--max-new-tokens", "2")
    assert result.exit_code == 2
    assert "pickle" in result.stderr and "--allow-pickle" in result.stderr and "pytorch_model.bin" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and not marker.exists()


def test_even_allowed_a_code_carrying_pickle_runs_nothing(cli, malicious):
    # With --allow-pickle, transformers unpickles with weights_only=True, which refuses the payload.
    folder, marker = malicious
    result = cli("generate", "hello", "-m", folder, "--max-new-tokens", "2", "--allow-pickle")
    assert result.exit_code != 0 and "Traceback" not in result.stderr
    assert not marker.exists()


def test_allow_pickle_loads_honest_bin_weights_the_same(cli, tiny_llama, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = _model_copy(tiny_llama, tmp_path / "bin-model")
    torch.save(load_file(str(tiny_llama / "model.safetensors")), folder / "pytorch_model.bin")
    args = ("generate", "the cat", "--max-new-tokens", "6", "--raw")
    expected = cli(*args, "-m", tiny_llama)
    refused = cli(*args, "-m", folder)
    allowed = cli(*args, "-m", folder, "--allow-pickle")
    assert refused.exit_code == 2 and allowed.exit_code == 0, allowed.stderr
    assert allowed.stdout == expected.stdout


def test_pickled_adapter_is_refused(cli, tiny_llama, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    (adapter / "adapter_model.bin").write_bytes(b"\x80\x04N.")
    result = cli("generate", "hi", "-m", tiny_llama, "--adapter", adapter, "--max-new-tokens", "2")
    assert result.exit_code == 2 and "--allow-pickle" in result.stderr and "adapter" in result.stderr


def test_chat_template_reaching_python_internals_fails_safely(cli, tiny_llama, tmp_path):
    folder = tmp_path / "template-model"
    shutil.copytree(tiny_llama, folder)
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (folder / "chat_template.jinja").write_text(escape)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    result = cli("generate", "hello", "-m", folder, "--max-new-tokens", "2")
    assert result.exit_code in (1, 2) and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "subclasses" not in result.stdout and "<class" not in result.stdout + result.stderr


def test_paths_in_records_are_text_not_files(cli, tiny_llama, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": 1, "prompt": "/etc/passwd"}) + "\n")
    result = cli("generate", "--input", source, "--json", "--raw", "-m", tiny_llama, "--max-new-tokens", "2")
    record = json.loads(result.stdout)
    assert record["prompt"] == "/etc/passwd"
    assert record["prompt_tokens"] < 20  # the path's own few tokens, not the file's contents


def test_hub_token_never_reaches_output_logs_or_model_card(cli, tiny_gpt2, tmp_path, monkeypatch):
    secret = "hf_gptcliTestSecretToken123"
    monkeypatch.setenv("HF_TOKEN", secret)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "what?\n", "completion": "that."}) + "\n" for _ in range(8)))
    out = tmp_path / "out"
    trained = cli("-v", "finetune", "--data", data, "-m", tiny_gpt2, "-o", out, "--max-steps", "2",
                  "--eval-fraction", "0")
    offline = cli("-v", "generate", "hi", "-m", "someone/not-cached-model")
    assert trained.exit_code == 0, trained.stderr
    for text in (trained.stdout, trained.stderr, offline.stdout, offline.stderr):
        assert secret not in text
    for path in out.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
