"""Inputs that were misread or misreported: .json/.csv/.tsv --input parsed into records (not lines
of text), JSON a run could never finish refused at read time, regional language codes mapped to
what the model has, and the checks of classify's labels and templates. The one-line refusals
themselves are in test_bad_input.py's catalogue."""

from __future__ import annotations

import json

import pytest

from gptcli.errors import UsageError
from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM, SEQ2SEQ
from gptcli.services.classify import ClassifyParams, check_params
from gptcli.services.translate import TranslateParams, make_translator
from tests.tasks import tiny_seq2seq


def _prompts(cli, llama, path) -> list[tuple]:
    result = cli("generate", "--input", path, "--json", "--raw", "-m", llama, "--max-new-tokens", "1")
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stdout.split("\n") if line]  # not splitlines: it breaks at U+2028
    return [(record["id"], record["prompt"]) for record in map(json.loads, lines)]


def test_json_array_is_records_not_lines(cli, tiny_llama, tmp_path):
    path = tmp_path / "p.json"
    path.write_text('[\n  {"prompt": "first"},\n  {"id": "b", "prompt": "second", "extra": [1, 2]}\n]\n')
    assert _prompts(cli, tiny_llama, path) == [(1, "first"), ("b", "second")]


def test_json_file_with_one_object_per_line_or_one_object(cli, tiny_llama, tmp_path):
    lines, single = tmp_path / "lines.json", tmp_path / "one.json"
    lines.write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    single.write_text('{\n  "prompt": "only one"\n}\n')
    assert _prompts(cli, tiny_llama, lines) == [(1, "a"), (2, "b")]
    assert _prompts(cli, tiny_llama, single) == [(1, "only one")]


def test_csv_and_tsv_header_names_the_fields(cli, tiny_llama, tmp_path):
    csv_file, tsv_file = tmp_path / "p.csv", tmp_path / "p.tsv"
    csv_file.write_text('id,prompt,topic\nq1,"hello, world",a\n\nq2,"two\nlines",b\n', encoding="utf-8")
    tsv_file.write_text("prompt\tnote\nit said, \"yes\"\tx\n", encoding="utf-8")
    assert _prompts(cli, tiny_llama, csv_file) == [("q1", "hello, world"), ("q2", "two\nlines")]
    assert _prompts(cli, tiny_llama, tsv_file) == [(1, 'it said, "yes"')]


def test_a_csv_cell_longer_than_csv_default_limit_is_read(tmp_path):
    from gptcli import textio

    path = tmp_path / "docs.csv"
    path.write_text("text\n" + "word " * 40_000 + "\n")  # 200 KB: over csv's 128 KiB default
    assert len(textio.read_records(str(path), "text")[0].fields["text"]) == 200_000


def test_jsonl_string_holding_a_line_separator_is_one_record(cli, tiny_llama, tmp_path):
    path = tmp_path / "p.jsonl"  # gptcli's own output (ensure_ascii=False) writes U+2028 raw
    path.write_text('{"prompt": "one\u2028line"}\n{"prompt": "next"}\n', encoding="utf-8")
    assert _prompts(cli, tiny_llama, path) == [(1, "one\u2028line"), (2, "next")]


def test_a_record_that_cannot_be_right_stops_the_run_before_anything_is_written(cli, tiny_llama, tmp_path):
    source, out = tmp_path / "p.jsonl", tmp_path / "out.jsonl"
    source.write_text('{"prompt": "fine"}\n{"prompt": "half \\ud800 a pair"}\n')
    for _attempt in range(2):  # a rerun says the same, and never half-finishes
        result = cli("generate", "--input", source, "-o", out, "-m", tiny_llama, "--max-new-tokens", "1")
        assert result.exit_code == 2 and "p.jsonl:2" in result.stderr, result.stderr
        assert not out.exists()


@pytest.fixture(scope="module")
def translators(session_dir) -> dict:
    folders = {
        "pair": tiny_seq2seq.build_marian(session_dir / "values-opus-mt-en-de"),
        "multi": tiny_seq2seq.build_marian(session_dir / "values-opus-mt-en-ROMANCE", source="en", target=None,
                                           target_tokens=(">>fr<<", ">>pt<<", ">>pt_br<<")),
        "m2m": tiny_seq2seq.build_m2m100(session_dir / "values-m2m100"),
        "nllb": tiny_seq2seq.build_nllb(session_dir / "values-nllb"),
    }
    return {name: load_model(LoadOptions(str(folder)), accept=(SEQ2SEQ,), command="translate")
            for name, folder in folders.items()} | {"folders": folders}


def _route(lm, target, source=None):
    return make_translator(lm, TranslateParams(target, source)).route


def test_regional_codes_use_the_models_own_code_else_the_base(translators):
    assert _route(translators["multi"], "pt-BR").prefix == ">>pt_br<< "  # an exact code wins
    pt_pt = _route(translators["multi"], "pt_PT")
    assert pt_pt.prefix == ">>pt<< " and "pt_PT as pt" in pt_pt.note
    assert _route(translators["pair"], "de-DE").note.endswith("translating de-DE as de")
    m2m, nllb = translators["m2m"], translators["nllb"]
    assert _route(m2m, "pt-BR", "en-US").forced_bos_token_id == m2m.tokenizer.get_lang_id("pt")
    assert _route(m2m, "deu", "eng").forced_bos_token_id == m2m.tokenizer.get_lang_id("de")
    de = _route(nllb, "de_DE.UTF-8", "en")
    assert de.forced_bos_token_id == nllb.tokenizer.convert_tokens_to_ids("deu_Latn")
    taiwan = _route(nllb, "zh-TW", "en")  # the base zh would be Simplified: zho_Hans
    assert taiwan.forced_bos_token_id == nllb.tokenizer.convert_tokens_to_ids("zho_Hant")


def test_cli_translates_into_de_de_with_a_de_model(cli, translators):
    result = cli("translate", "the cat sat.", "--to", "de-DE", "-m", translators["folders"]["pair"],
                 "--max-new-tokens", "2")
    assert result.exit_code == 0, result.stderr
    assert "translating de-DE as de" in result.stderr


def test_translate_reads_csv_records(cli, translators, tmp_path):
    path = tmp_path / "lines.csv"
    path.write_text("id,text\nfirst,the cat sat.\nsecond,a red house.\n")
    result = cli("translate", "--input", path, "--to", "de", "--json", "-m", translators["folders"]["pair"],
                 "--max-new-tokens", "2")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["first", "second"]


def test_a_causal_lm_is_told_the_region(session_dir):
    lm = load_model(LoadOptions(str(tiny_seq2seq.long_llama(session_dir))), accept=(CAUSAL_LM,), command="translate")
    segments = []
    translator = make_translator(lm, TranslateParams("pt-BR", "en", max_new_tokens=1), trace=segments.append)
    list(translator.translate(["the cat."]))
    assert segments[0].request.startswith("Translate the following text from English into Portuguese (BR).")


def test_one_label_needs_multi_label_and_templates_take_only_their_placeholders():
    with pytest.raises(UsageError, match="two or more"):
        check_params(ClassifyParams(("spam",)))
    check_params(ClassifyParams(("spam",), multi_label=True))  # one label on its own: a yes/no score
    check_params(ClassifyParams(("a", "b"), label_template="{{literal}} about {}",
                                prompt="Labels: {labels}. {{JSON}} {text} {text}"))
    for bad in ({"label_template": "{:>9}"}, {"hypothesis_template": "{!r}"}, {"prompt": "{text!s}"},
                {"prompt": "{text} {labels[0]}"}):
        with pytest.raises(UsageError):
            check_params(ClassifyParams(("a", "b"), **bad))


def test_seed_range_is_the_documented_one(cli):
    from gptcli.engine.sampling import MAX_SEED, SamplingParams

    SamplingParams(temperature=1.0, seed=0).validate()
    SamplingParams(temperature=1.0, seed=MAX_SEED).validate()
    with pytest.raises(UsageError, match="--seed"):
        SamplingParams(temperature=1.0, seed=MAX_SEED + 1).validate()
    assert "4294967295" in cli("generate", "--help").stdout
