"""translate on tiny models of each kind: language codes, routes, forced BOS, line-true output, CLI."""

from __future__ import annotations

import json

import pytest

from gptcli.errors import InputError
from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM, SEQ2SEQ
from gptcli.services.translate import TranslateParams, make_translator
from tests.tasks import tiny_seq2seq


@pytest.fixture(scope="session")
def marian_en_de(session_dir):
    return tiny_seq2seq.build_marian(session_dir / "opus-mt-en-de")


@pytest.fixture(scope="session")
def marian_multi(session_dir):
    return tiny_seq2seq.build_marian(session_dir / "opus-mt-en-ROMANCE", source="en", target=None,
                                     target_tokens=(">>fr<<", ">>es<<", ">>ita<<"))


@pytest.fixture(scope="session")
def tiny_nllb(session_dir):
    return tiny_seq2seq.build_nllb(session_dir / "tiny-nllb")


@pytest.fixture(scope="session")
def tiny_m2m(session_dir):
    return tiny_seq2seq.build_m2m100(session_dir / "tiny-m2m100")


@pytest.fixture(scope="session")
def tiny_t5(session_dir):
    return tiny_seq2seq.build_t5(session_dir / "tr-t5")


@pytest.fixture(scope="session")
def long_llama(session_dir):
    return tiny_seq2seq.long_llama(session_dir)


def _load(folder, kind=SEQ2SEQ):
    return load_model(LoadOptions(str(folder)), accept=(kind,), command="translate")


def _translate(lm, lines, target, source=None, **kw):
    segments = []
    translator = make_translator(lm, TranslateParams(target, source, **kw), trace=segments.append)
    return list(translator.translate(lines)), segments, translator


def test_nllb_maps_iso_codes_and_forces_the_target_token(tiny_nllb):
    lm = _load(tiny_nllb)
    _results, segments, translator = _translate(lm, ["the cat sat."], "fr", "en", max_new_tokens=4)
    route = translator.route
    assert (route.src_lang, route.forced_bos_token_id) == ("eng_Latn", lm.tokenizer.convert_tokens_to_ids("fra_Latn"))
    # The source-language token leads the encoder input, and decoding really starts with the target's.
    assert lm.tokenizer("the cat sat.")["input_ids"][0] == lm.tokenizer.convert_tokens_to_ids("eng_Latn")
    encoded = lm.tokenizer(["the cat sat."], return_tensors="pt").to(lm.model.device)
    out = lm.model.generate(**encoded, max_new_tokens=3, **route.generate_kwargs)
    assert out[0, 1].item() == route.forced_bos_token_id
    assert "fra_Latn" not in segments[0].output  # the forced token is not part of the text
    assert _translate(lm, ["x"], "deu_Latn", "eng_Latn", max_new_tokens=2)[2].route.src_lang == "eng_Latn"


def test_m2m100_uses_its_own_codes_and_forced_bos(tiny_m2m):
    lm = _load(tiny_m2m)
    results, segments, translator = _translate(lm, ["the cat sat."], "de", "en", max_new_tokens=4)
    assert translator.route.forced_bos_token_id == lm.tokenizer.get_lang_id("de")
    assert segments[0].request == "the cat sat." and results[0].generated_tokens >= 2


@pytest.mark.parametrize("fixture,target,source,message", [
    ("tiny_nllb", "fr", None, "(NLLB) needs the source language: add --from"),
    ("tiny_m2m100", "de", None, "(M2M100) needs the source language: add --from"),
    ("tiny_nllb", "xx", "en", "--to xx: "),
    ("tiny_m2m100", "tlh", "en", "supports af, am, ar"),
    ("marian_en_de", "fr", "en", "translates en→de only"),
    ("marian_en_de", "de", "ru", "--from ru: "),
    ("marian_multi", "de", "en", "translates into fr, es, ita"),
    ("tr_t5", "ro", None, "cannot translate en→ro; it supports en→de, en→fr"),
])
def test_unsupported_pairs_say_what_the_model_supports(request, fixture, target, source, message):
    folder = request.getfixturevalue({"tiny_m2m100": "tiny_m2m", "tr_t5": "tiny_t5"}.get(fixture, fixture))
    with pytest.raises(InputError) as caught:
        make_translator(_load(folder), TranslateParams(target, source))
    assert message in str(caught.value)


def test_marian_pair_and_multi_target_routes(marian_en_de, marian_multi):
    pair = make_translator(_load(marian_en_de), TranslateParams("de")).route
    assert (pair.family, pair.prefix) == ("marian", "")
    multi_lm = _load(marian_multi)
    _results, segments, translator = _translate(multi_lm, ["the cat sat."], "it", max_new_tokens=3)
    assert translator.route.prefix == ">>ita<< " and segments[0].request == ">>ita<< the cat sat."
    assert make_translator(multi_lm, TranslateParams("fr")).route.prefix == ">>fr<< "


def test_t5_prefix_from_its_task_params(tiny_t5):
    _results, segments, translator = _translate(_load(tiny_t5), ["the sun is red."], "fr", max_new_tokens=3)
    assert segments[0].request == "translate English to French: the sun is red."


def test_causal_lm_prompt_names_both_languages(long_llama):
    lm = _load(long_llama, CAUSAL_LM)
    _results, segments, _ = _translate(lm, ["the cat."], "de", "en", max_new_tokens=3)
    assert segments[0].request.startswith("Translate the following text from English into German.")
    assert segments[0].request.endswith("\n\nthe cat.")
    with pytest.raises(InputError, match="unknown language code 'qq'"):
        make_translator(lm, TranslateParams("qq"))


def test_lines_stay_true_and_long_lines_are_split_not_cut(marian_en_de):
    lm = _load(marian_en_de)
    long_line = " ".join(f"the dog ran to the river number {i}." for i in range(30))  # several contexts long
    lines = ["the cat sat.", "", long_line, "   ", "a red house."]
    results, segments, translator = _translate(lm, lines, "de", batch_size=4, max_new_tokens=3)
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.segments for r in results][:2] == [1, 0] and results[3].segments == 0
    assert results[1].text == "" and results[3].text == ""
    assert results[2].segments > 2 and all("\n" not in r.text for r in results)
    pieces = [s.source for s in segments if s.line == 2]
    assert " ".join(pieces).split() == long_line.split()  # every word of the long line was translated
    assert all(translator.lm.tokenizer(p, add_special_tokens=False)["input_ids"].__len__()
               <= translator.segment_budget() for p in pieces)


def test_cli_is_line_true_on_stdin(cli, marian_en_de):
    text = "the cat sat.\n\nthe dog ran to the river. it was a big day.\n\n\na red house.\n"
    result = cli("translate", "--to", "de", "--model", marian_en_de, "--max-new-tokens", "3", input=text)
    assert result.exit_code == 0, result.stderr
    out_lines = result.stdout.split("\n")[:-1]
    assert len(out_lines) == len(text.splitlines()) == 6
    assert [line == "" for line in out_lines] == [line == "" for line in text.splitlines()]


def test_cli_json_output_and_resume(cli, marian_en_de, tmp_path):
    source = tmp_path / "lines.txt"
    source.write_text("the cat sat.\n\na red house.\n")
    out = tmp_path / "out.jsonl"
    first = cli("translate", "--input", source, "--to", "de", "--model", marian_en_de, "--max-new-tokens", "3",
                "--output", out, "--stats")
    assert first.exit_code == 0 and "3 lines" in first.stderr
    again = cli("translate", "--input", source, "--to", "de", "--model", marian_en_de, "--max-new-tokens", "3",
                "--output", out)
    assert again.exit_code == 0 and "nothing to do" in again.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [1, 2, 3] and records[1]["translation"] == ""
    shown = cli("translate", "the cat sat.", "--to", "de", "--model", marian_en_de, "--max-new-tokens", "2", "--json")
    assert json.loads(shown.stdout)["text"] == "the cat sat."


def test_cli_errors_are_one_line_with_exit_2(cli, tiny_nllb, marian_en_de, tiny_bart_for_translate):
    cases = [
        (("translate", "hello", "--model", tiny_nllb, "--to", "fr"), "needs the source language: add --from"),
        (("translate", "hello", "--model", marian_en_de, "--to", "ja"), "translates en→de only"),
        (("translate", "hello", "--model", marian_en_de), "--to"),
        (("translate", "hello", "--model", tiny_bart_for_translate, "--to", "de"), "is not a translation model"),
        (("translate", "--model", marian_en_de, "--to", "de"), "no text to translate"),
    ]
    for args, message in cases:
        result = cli(*args, input="" if "hello" not in args else None)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


@pytest.fixture(scope="session")
def tiny_bart_for_translate(session_dir):
    return tiny_seq2seq.build_bart(session_dir / "tr-bart")


def test_lines_are_split_as_a_shell_counts_them(cli, marian_en_de):
    # A form feed and U+2028 inside a line do not end it: 3 lines in, 3 lines out, in place.
    text = "the cat\x0csat.\n\na red\u2028house.\r\n"
    result = cli("translate", "--to", "de", "--model", marian_en_de, "--max-new-tokens", "3", input=text)
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.split("\n")) == 4 and result.stdout.split("\n")[1] == ""
