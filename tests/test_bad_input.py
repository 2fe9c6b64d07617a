"""The bad-input catalogue: every case one line on stderr, the right exit code, no traceback,
nothing half-written. Each case names what it feeds in and what the message must name."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

GOOD_CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


@dataclass
class Case:
    name: str
    args: Callable[[Path, dict], list]  # (tmp_path, models) -> command line
    code: int
    says: tuple[str, ...]  # fragments the one error line must hold
    stdin: str | bytes | None = None
    keeps: dict = field(default_factory=dict)  # file name -> content it must still have afterwards


def write(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def jsonl(tmp: Path, name: str, *rows) -> Path:
    return write(tmp, name, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def generate_with(build):
    return lambda t, m: ["generate", "-m", m["llama"], *build(t)]


def generate_with_nowhere(build):
    """generate with a model path that does not exist: the error must come before any model loads."""
    return lambda t, m: ["generate", "-m", t / "no-model", *build(t)]


def model_folder_without(tmp: Path, source: Path, *drop: str) -> Path:
    import shutil

    folder = tmp / "broken-model"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(*drop))
    return folder


def corrupt_weights(tmp: Path, source: Path) -> Path:
    folder = model_folder_without(tmp, source, "model.safetensors")
    header = json.dumps({"w": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 10)
    return folder


def bad_config(tmp: Path, source: Path) -> Path:
    folder = model_folder_without(tmp, source)
    (folder / "config.json").write_text("{not json")
    return folder


CASES = [
    # ---- generate: --input files
    Case("malformed JSON line", generate_with(lambda t: ["--input", jsonl(t, "p.jsonl", {"prompt": "a"}, '{"prompt": ')]),
         2, ("p.jsonl:2", "JSON")),
    Case("JSON but not an object", generate_with(lambda t: ["--input", jsonl(t, "p.jsonl", [1, 2])]),
         2, ("p.jsonl:1", "object")),
    Case("missing prompt field", generate_with(lambda t: ["--input", jsonl(t, "p.jsonl", {"text": "a"})]),
         2, ("p.jsonl:1", "prompt")),
    Case("mistyped prompt field", generate_with(lambda t: ["--input", jsonl(t, "p.jsonl", {"prompt": 5})]),
         2, ("p.jsonl:1", "prompt")),
    Case("empty file", generate_with(lambda t: ["--input", write(t, "p.txt", "")]), 2, ("p.txt",)),
    Case("only blank lines", generate_with(lambda t: ["--input", write(t, "p.txt", "\n  \n\n")]), 2, ("p.txt",)),
    Case("non-UTF-8 bytes", generate_with(lambda t: ["--input", write(t, "p.txt", b"ok\n\xff\xfe bad\n")]),
         2, ("p.txt:2", "UTF-8")),
    Case("NUL byte", generate_with(lambda t: ["--input", write(t, "p.txt", "ok\nbad\0line\n")]), 2, ("p.txt:2",)),
    Case("50 MB single line", generate_with(lambda t: ["--input", write(t, "p.txt", "word " * 10_000_000 + "\n")]),
         2, ("p.txt:1", "characters", "--truncate")),
    Case("unknown role in messages",
         generate_with(lambda t: ["--input", jsonl(t, "c.jsonl", {"messages": [{"role": "wizard", "content": "x"}]})]),
         2, ("c.jsonl:1", "wizard")),
    Case("messages not a list", generate_with(lambda t: ["--input", jsonl(t, "c.jsonl", {"messages": "hi"})]),
         2, ("c.jsonl:1", "messages")),
    Case("input file missing", generate_with(lambda t: ["--input", t / "nope.jsonl"]), 2, ("nope.jsonl",)),
    Case("input is a folder", generate_with(lambda t: ["--input", t]), 2, (" is a folder",)),
    # ---- generate: the prompt and options
    Case("empty prompt argument", lambda t, m: ["generate", "", "-m", m["llama"]], 2, ("empty",)),
    Case("blank stdin", lambda t, m: ["generate", "-", "-m", m["llama"]], 2, ("stdin",), stdin="  \n"),
    Case("temperature below 0", lambda t, m: ["generate", "x", "-m", m["llama"], "--temperature", "-1"],
         2, ("--temperature",)),
    Case("top-p above 1", lambda t, m: ["generate", "x", "-m", m["llama"], "--top-p", "1.5"], 2, ("--top-p",)),
    Case("top-p of 0", lambda t, m: ["generate", "x", "-m", m["llama"], "--top-p", "0"], 2, ("--top-p",)),
    Case("max-new-tokens 0", lambda t, m: ["generate", "x", "-m", m["llama"], "--max-new-tokens", "0"],
         2, ("--max-new-tokens",)),
    Case("not a number", lambda t, m: ["generate", "x", "--max-new-tokens", "many"], 2, ("--max-new-tokens",)),
    Case("unknown option", lambda t, m: ["generate", "x", "--temprature", "1"], 2, ("--temprature",)),
    Case("prompt and --input together",
         lambda t, m: ["generate", "x", "--input", write(t, "p.txt", "a\n"), "-m", m["llama"]], 2, ("--input",)),
    Case("--output into a missing folder",
         lambda t, m: ["generate", "--input", write(t, "p.txt", "a\n"), "-o", t / "no" / "o.jsonl", "-m", m["llama"]],
         2, ("does not exist",)),
    Case("--output onto the input", lambda t, m: ["generate", "--input", write(t, "p.txt", "a\n"), "-o",
                                                  t / "p.txt", "-m", m["llama"]], 2, ("input",), keeps={"p.txt": "a\n"}),
    Case("--truncate bogus", lambda t, m: ["generate", "x", "-m", m["llama"], "--truncate", "middle"], 2,
         ("--truncate",)),
    # ---- models
    Case("model path that does not exist", lambda t, m: ["generate", "x", "-m", t / "no-model"], 2, ("does not exist",)),
    Case("folder without a tokenizer",
         lambda t, m: ["generate", "x", "-m", model_folder_without(t, m["llama"], "tokenizer*", "*.jinja")],
         2, ("tokenizer",)),
    Case("folder that is not a model", lambda t, m: ["generate", "x", "-m", t], 2, ("config.json",)),
    Case("model of the wrong kind", lambda t, m: ["generate", "x", "-m", m["bert"]], 2, ("generate",)),
    Case("corrupt safetensors", lambda t, m: ["generate", "x", "-m", corrupt_weights(t, m["llama"])], 2,
         ("weights",)),
    Case("config.json not JSON", lambda t, m: ["generate", "x", "-m", bad_config(t, m["llama"])], 2, ("config",)),
    Case("truncated GGUF", lambda t, m: ["generate", "x", "-m", write(t, "m.gguf", b"GGUF\x03\x00\x00\x00\x01")],
         2, ("m.gguf",)),
    Case("hub id while offline", lambda t, m: ["generate", "x", "-m", "nobody/no-such-model-here"], 1,
         ("offline", "nobody/no-such-model-here")),
    Case("adapter for another base", lambda t, m: ["generate", "x", "-m", m["gpt2"], "--adapter", m["adapter"]],
         2, ("--adapter",)),
    Case("adapter folder without a config", lambda t, m: ["generate", "x", "-m", m["llama"], "--adapter", t],
         2, ("adapter_config.json",)),
    Case("unknown device", lambda t, m: ["generate", "x", "-m", m["llama"], "--device", "tpu"], 2, ("--device",)),
    Case("unknown dtype", lambda t, m: ["generate", "x", "-m", m["llama"], "--dtype", "float8"], 2, ("--dtype",)),
    # ---- classify
    Case("labels empty", lambda t, m: ["classify", "x", "--labels", "", "-m", m["llama"]], 2, ("--labels",)),
    Case("labels with a duplicate", lambda t, m: ["classify", "x", "--labels", "a,b,a", "-m", m["llama"]], 2,
         ("repeats",)),
    Case("no labels for a zero-shot model", lambda t, m: ["classify", "x", "-m", m["llama"]], 2, ("--labels",)),
    Case("threshold without --multi-label",
         lambda t, m: ["classify", "x", "--labels", "a,b", "--threshold", "0.3", "-m", m["llama"]], 2,
         ("--multi-label",)),
    Case("threshold outside (0, 1)",
         lambda t, m: ["classify", "x", "--labels", "a,b", "--multi-label", "--threshold", "2", "-m", m["llama"]],
         2, ("--threshold",)),
    Case("classify on a seq2seq-less kind mismatch", lambda t, m: ["classify", "x", "--labels", "a,b", "-m",
                                                                   m["t5"]], 2, ("classify",)),
    Case("labels file missing", lambda t, m: ["classify", "x", "--labels-file", t / "l.txt", "-m", m["llama"]],
         2, ("l.txt",)),
    Case("classify record without text",
         lambda t, m: ["classify", "--input", jsonl(t, "c.jsonl", {"body": "x"}), "--labels", "a,b", "-m", m["llama"]],
         2, ("c.jsonl:1", "text")),
    # ---- summarize
    Case("summarize empty stdin", lambda t, m: ["summarize", "-m", m["llama"]], 2, ("stdin",), stdin=""),
    Case("summarize bad --length", lambda t, m: ["summarize", "x", "--length", "huge", "-m", m["llama"]], 2,
         ("--length",)),
    Case("summarize bad --overflow", lambda t, m: ["summarize", "x", "--overflow", "drop", "-m", m["llama"]], 2,
         ("--overflow",)),
    Case("summarize with a classifier", lambda t, m: ["summarize", "x", "-m", m["bert"]], 2, ("summarize",)),
    # ---- translate
    Case("translate without --to", lambda t, m: ["translate", "hello", "-m", m["llama"]], 2, ("--to",)),
    Case("unknown language code", lambda t, m: ["translate", "hello", "--to", "qqz", "-m", m["llama"]], 2,
         ("qqz",)),
    Case("unsupported language pair", lambda t, m: ["translate", "hello", "--from", "fr", "--to", "de", "-m",
                                                    m["marian"]], 2, ("fr",)),
    # ---- finetune
    Case("finetune data missing", lambda t, m: ["finetune", "--data", t / "none.jsonl", "-m", m["llama"], "-o",
                                                t / "out"], 2, ("none.jsonl",)),
    Case("finetune mixed formats",
         lambda t, m: ["finetune", "--data", jsonl(t, "d.jsonl", GOOD_CHAT, {"text": "plain"}), "-m", m["llama"],
                       "-o", t / "out"], 2, ("d.jsonl:2", "mixed")),
    Case("finetune unknown role",
         lambda t, m: ["finetune", "--data", jsonl(t, "d.jsonl", {"messages": [{"role": "bot", "content": "x"}]}),
                       "-m", m["llama"], "-o", t / "out"], 2, ("d.jsonl:1", "bot")),
    Case("finetune CRLF and BOM are fine but an empty text is not",
         lambda t, m: ["finetune", "--data", write(t, "d.jsonl", '\ufeff{"text": "ok"}\r\n{"text": ""}\r\n'),
                       "-m", m["llama"], "-o", t / "out"], 2, ("d.jsonl:2", "empty")),
    Case("finetune bad method", lambda t, m: ["finetune", "--data", jsonl(t, "d.jsonl", GOOD_CHAT), "--method",
                                              "magic", "-m", m["llama"], "-o", t / "out"], 2, ("--method",)),
    Case("finetune eval fraction above 1",
         lambda t, m: ["finetune", "--data", jsonl(t, "d.jsonl", GOOD_CHAT), "--eval-fraction", "1.5", "-m",
                       m["llama"], "-o", t / "out"], 2, ("--eval-fraction",)),
    Case("finetune resume with nothing to resume",
         lambda t, m: ["finetune", "--data", jsonl(t, "d.jsonl", GOOD_CHAT), "--resume", "-m", m["llama"], "-o",
                       t / "empty-out"], 2, ("--resume",)),
    # ---- values that cannot be right: exit 2 before any model loads. The model path does not
    # exist, so an error that came after loading would read "does not exist" instead.
    *[Case(f"{option} {value}", lambda t, m, o=option, v=value: ["generate", "x", "-m", t / "no-model", o, v],
           2, (option,)) for option, value in [
        ("--temperature", "nan"), ("--temperature", "inf"), ("--repetition-penalty", "nan"),
        ("--repetition-penalty", "inf"), ("--seed", "-1"), ("--seed", str(2**64))]],
    *[Case(f"{option} {template!r}",
           lambda t, m, o=option, v=template: ["classify", "x", "--labels", "a,b", "-m", t / "no-model", o, v],
           2, (option, allowed)) for option, template, allowed in [
        # each holds the {} the old check looked for, and one thing more
        ("--label-template", "About {} or {0}.", "{}"), ("--label-template", "About {} ({label}).", "{}"),
        ("--label-template", "About {} {.", "{}"), ("--label-template", "About {} }.", "{}"),
        ("--label-template", "About {} and {}.", "{}"), ("--hypothesis-template", "It is {} or {label}.", "{}"),
        ("--hypothesis-template", "It is {}{", "{}"), ("--prompt", "{text} as {0}", "{labels}"),
        ("--prompt", "Pick one of {label}: {text}", "{labels}"), ("--prompt", "{text", "{text}"),
        ("--prompt", "{text} }", "{text}")]],
    Case("a lone surrogate in a field", generate_with_nowhere(lambda t: ["--input", jsonl(
        t, "p.jsonl", {"prompt": "fine"}, {"prompt": "bad \ud800 half"})]), 2, ("p.jsonl:2", "\\ud800", "'prompt'")),
    Case("a lone surrogate in a key", generate_with_nowhere(lambda t: ["--input", jsonl(
        t, "p.jsonl", {"prompt": "fine"}, {"prompt": "ok", "\udc00k": 1})]), 2, ("p.jsonl:2", "\\udc00", "key")),
    Case("a lone surrogate in a message", generate_with_nowhere(lambda t: ["--input", jsonl(
        t, "c.jsonl", {"messages": [{"role": "user", "content": "\udfff"}]})]), 2, ("c.jsonl:1", "messages[1].content")),
    Case("a lone surrogate in a .json array", generate_with_nowhere(lambda t: ["--input", write(
        t, "p.json", '[{"prompt": "a"},\n {"prompt": "\\ud800"}]')]), 2, ("p.json:2", "\\ud800")),
    Case("JSON nested 100,000 deep", generate_with_nowhere(lambda t: ["--input", write(
        t, "p.jsonl", '{"prompt": "a"}\n{"prompt": "b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}\n")]),
        2, ("p.jsonl:2", "nested")),
    Case("JSON nested 500 deep", generate_with_nowhere(lambda t: ["--input", write(
        t, "p.jsonl", '{"prompt": "b", "x": ' + "[" * 500 + "]" * 500 + "}\n")]), 2, ("p.jsonl:1", "nested")),
    Case("bare NaN in JSON", generate_with_nowhere(lambda t: ["--input", write(t, "p.jsonl", '{"prompt": "a", "s": NaN}\n')]),
         2, ("p.jsonl:1", "NaN")),
    Case("a number beyond float", generate_with_nowhere(lambda t: ["--input", write(
        t, "p.jsonl", '{"prompt": "a", "s": 1e999}\n')]), 2, ("p.jsonl:1", "1e999")),
    Case("a 5000-digit integer", generate_with_nowhere(lambda t: ["--input", write(
        t, "p.jsonl", '{"prompt": "a", "s": ' + "9" * 5000 + "}\n")]), 2, ("p.jsonl:1", "5000 digits")),
    Case("a key twice", generate_with_nowhere(lambda t: ["--input", write(t, "p.jsonl", '{"prompt": "a", "prompt": "b"}\n')]),
         2, ("p.jsonl:1", "twice")),
    Case("classify reads the same way", lambda t, m: ["classify", "--input", jsonl(t, "c.jsonl", {"text": "\ud800"}),
                                                      "--labels", "a,b", "-m", t / "no-model"], 2, ("c.jsonl:1",)),
    Case("summarize reads the same way", lambda t, m: ["summarize", "--input", jsonl(t, "s.jsonl", {"text": "\ud800"}),
                                                       "-m", t / "no-model"], 2, ("s.jsonl:1",)),
    Case("translate reads the same way", lambda t, m: ["translate", "--input", jsonl(t, "l.jsonl", {"text": "\ud800"}),
                                                       "--to", "de", "-m", t / "no-model"], 2, ("l.jsonl:1",)),
    Case("an argument that is not UTF-8", lambda t, m: ["generate", "bad \udcff byte", "-m", t / "no-model"], 2,
         ("UTF-8", "0xff")),
    Case("--labels not UTF-8", lambda t, m: ["classify", "x", "--labels", "a,\udce9t\udce9", "-m", t / "no-model"], 2,
         ("--labels", "UTF-8")),
    Case("a document argument that is not UTF-8", lambda t, m: ["summarize", "bad \udcff byte", "-m", t / "no-model"],
         2, ("the document", "UTF-8", "0xff")),
    # ---- --input formats: .json and .csv parsed, or refused by name; never read as lines of text
    Case(".parquet input", generate_with_nowhere(lambda t: ["--input", write(t, "p.parquet", b"PAR1\x00\x01")]), 2,
         ("p.parquet", ".jsonl", ".csv")),
    Case(".gz input", generate_with_nowhere(lambda t: ["--input", write(t, "p.jsonl.gz", b"\x1f\x8b\x08")]), 2,
         ("p.jsonl.gz", "decompress")),
    Case(".xlsx input", generate_with_nowhere(lambda t: ["--input", write(t, "p.xlsx", b"PK\x03\x04")]), 2,
         ("p.xlsx", ".tsv")),
    Case(".json array not closed", generate_with_nowhere(lambda t: ["--input", write(
        t, "p.json", '[{"prompt": "a"},\n {"prompt": "b"}\n')]), 2, ("p.json:3", "not closed")),
    Case(".json array of strings", generate_with_nowhere(lambda t: ["--input", write(t, "p.json", '["a", "b"]')]), 2,
         ("p.json:1", "object")),
    Case(".json broken on line 3", generate_with_nowhere(lambda t: ["--input", write(
        t, "p.json", '[\n{"prompt": "a"},\n{"prompt": }]')]), 2, ("p.json:3", "JSON")),
    Case(".csv row with too many cells", generate_with_nowhere(lambda t: ["--input", write(
        t, "p.csv", "id,prompt\n1,hello\n2,hello, world\n")]), 2, ("p.csv:3", "3 cells", "2 columns")),
    Case(".csv without the field", generate_with_nowhere(lambda t: ["--input", write(t, "p.csv", "text\nhello\n")]), 2,
         ("p.csv:2", "'prompt'", "text")),
    Case(".csv quote never closed", generate_with_nowhere(lambda t: ["--input", write(
        t, "p.csv", 'prompt\nfine\n"open\nand on\n')]), 2, ("p.csv:3", "CSV")),
    Case(".tsv header names a column twice", generate_with_nowhere(lambda t: ["--input", write(
        t, "p.tsv", "prompt\tprompt\na\tb\n")]), 2, ("p.tsv:1", "twice")),
    # ---- messages that said the wrong thing
    Case("--from and --to the same", lambda t, m: ["translate", "hello", "--from", "en", "--to", "EN", "-m",
                                                   t / "no-model"], 2, ("--from", "--to", "same language")),
    Case("--from English --to eng_Latn", lambda t, m: ["translate", "hello", "--from", "English", "--to", "eng_Latn",
                                                       "-m", t / "no-model"], 2, ("same language",)),
    Case("a single label", lambda t, m: ["classify", "x", "--labels", "spam", "-m", t / "no-model"], 2,
         ("'spam'", "two")),
    Case("10,000 labels on a causal LM", lambda t, m: ["classify", "x", "-m", m["llama"], "--labels",
                                                       ",".join(f"label{i}" for i in range(10_000))], 2,
         ("10,000 labels", "tokens", "fewer labels")),
]


@pytest.fixture(scope="module")
def models(session_dir, tmp_path_factory, tiny_llama, tiny_gpt2, tiny_bert) -> dict:
    from tests.tasks import tiny_classifiers, tiny_seq2seq

    return {"llama": tiny_llama, "gpt2": tiny_gpt2, "bert": tiny_bert,
            "t5": tiny_classifiers.built_once(session_dir / "tiny-t5-classify", tiny_classifiers.build_t5),
            "marian": tiny_seq2seq_marian(session_dir, tiny_seq2seq),
            "adapter": llama_adapter(tiny_llama, tmp_path_factory.mktemp("adapter"))}


def tiny_seq2seq_marian(session_dir: Path, module) -> Path:
    folder = session_dir / "catalogue-marian"
    if not (folder / "config.json").is_file():
        module.build_marian(folder, "en", "de")
    return folder


def llama_adapter(base: Path, folder: Path) -> Path:
    """A LoRA adapter made for the tiny Llama (its module names do not exist in GPT-2)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_one_line_and_the_right_exit_code(cli, models, tmp_path, case, hub_offline):
    args = case.args(tmp_path, models)
    result = cli(*args, input=case.stdin)
    assert result.exit_code == case.code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptcli: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in case.says:
        assert fragment in lines[0], (fragment, lines[0])
    assert result.stdout == ""
    for name, content in case.keeps.items():
        assert (tmp_path / name).read_text() == content


def test_catalogue_is_at_least_forty_cases():
    assert len(CASES) >= 40


def test_crlf_and_bom_inputs_work_and_leave_no_trace(cli, models, tmp_path):
    source = write(tmp_path, "p.txt", "\ufefffirst line\r\nsecond line\r\n")
    result = cli("generate", "--input", source, "--json", "--raw", "-m", models["llama"], "--max-new-tokens", "2")
    assert result.exit_code == 0, result.stderr
    prompts = [json.loads(line)["prompt"] for line in result.stdout.splitlines()]
    assert prompts == ["first line", "second line"]
