"""Resolving --model specs and loading them: one loader, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gptcli.errors import GptcliError, InputError, UsageError
from gptcli.models import LoadOptions, convert, load_model, resolve
from gptcli.models.kinds import CAUSAL_LM
from gptcli.models.placement import choose_placement, cpu_has_native_bf16


def _load(spec, **kw):
    return load_model(LoadOptions(str(spec), **kw), accept=(CAUSAL_LM,), command="generate")


def test_local_folder_loads_with_requested_dtype(tiny_llama):
    lm = _load(tiny_llama, dtype="float32")
    assert lm.kind == CAUSAL_LM and str(lm.model.dtype) == "torch.float32"
    assert lm.context_length == 128 and lm.tokenizer.pad_token is not None


def test_auto_dtype_on_cpu_follows_native_bf16():
    placement = choose_placement("cpu", "auto")
    assert placement.device == "cpu"
    assert placement.dtype_name == ("bfloat16" if cpu_has_native_bf16() else "float32")
    assert "native bf16" in placement.reason


@pytest.mark.parametrize("spec,message", [
    ("./no/such/folder", "does not exist"),
    ("/tmp/definitely-missing-model.gguf", "does not exist"),
    ("not a hub id!", "neither an existing path nor a valid hub id"),
])
def test_bad_specs_are_input_errors(spec, message):
    with pytest.raises(InputError, match=message):
        resolve.resolve(spec)


def test_folder_without_config_or_tokenizer_or_with_broken_config(tmp_path, tiny_llama):
    with pytest.raises(InputError, match="not a model folder"):
        resolve.resolve(str(tmp_path))
    no_tokenizer = tmp_path / "no-tok"
    no_tokenizer.mkdir()
    shutil.copy(tiny_llama / "config.json", no_tokenizer)
    with pytest.raises(InputError, match="has no tokenizer"):
        resolve.resolve(str(no_tokenizer))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json: not valid JSON"):
        resolve.resolve(str(broken))


def test_wrong_kind_is_named(tiny_bert):
    with pytest.raises(InputError, match="is a sequence classifier; `gptcli generate` needs a causal"):
        _load(tiny_bert)


def test_unreachable_hub_id_offline_says_how_to_fix():
    with pytest.raises(GptcliError) as error:
        _load("someone/not-cached-model")
    assert error.value.exit_code == 1
    assert "not in the local Hugging Face cache" in error.value.message and "hf download" in error.value.message


def test_model_needing_remote_code_asks_for_the_flag(tmp_path, tiny_llama):
    folder = tmp_path / "custom"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my-custom-arch", auto_map={"AutoConfig": "modeling_custom.CustomConfig"})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match="--trust-remote-code"):
        _load(folder)


def test_default_alias_prefers_the_hf_cache(tiny_llama, session_dir, monkeypatch, tmp_path):
    hub = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(hub))
    repo = hub / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    shutil.copytree(tiny_llama, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    assert resolve.resolve(None).folder == snapshot
    assert resolve.resolve("smollm2").folder == snapshot


def test_default_alias_falls_back_to_package_then_hub(monkeypatch, default_model_available):
    assert resolve.resolve(None).gguf == resolve.packaged_default_gguf()
    monkeypatch.setattr(resolve, "packaged_default_gguf", lambda: None)
    assert resolve.resolve(None).hub_id == resolve.DEFAULT_HUB_ID


def test_half_written_conversion_is_never_trusted(tmp_path, monkeypatch):
    """A folder without the completion marker, or a temp folder of a dead run, is redone."""
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    calls = []

    def fake_convert(source, target):  # stands in for the slow de-quantization; the folder logic is real
        calls.append(source)
        tmp = target.parent / f".tmp-{target.name}-1"
        tmp.mkdir()
        (tmp / convert.MARKER).write_text("{}")
        tmp.rename(target)

    monkeypatch.setattr(convert, "_convert_into", fake_convert)
    target = convert._target_for(gguf)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")  # left by a crash: no marker
    stale = target.parent / f".tmp-{target.name}-999"
    stale.mkdir()
    assert convert.converted_folder(gguf) == target
    assert calls == [gguf] and not stale.exists() and (target / convert.MARKER).is_file()
    assert convert.converted_folder(gguf) == target and calls == [gguf]  # second call: cached


def test_truncated_gguf_is_a_clear_input_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 20)
    with pytest.raises(InputError, match="cannot read this GGUF file"):
        _load(bad)
    leftovers = list(Path(convert.cache_dir(), "models").glob(".tmp-broken*"))
    assert leftovers == []
