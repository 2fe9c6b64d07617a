"""`gptcli embed` end to end on tiny models built here: the vectors are the model's token states
pooled as its config asks (checked against a pooling done by hand), in input order, resumable,
as JSON lines or a NumPy array, with bad input and long texts refused before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy
import pytest

from tests.tasks import tiny_classifiers as tc

TEXTS = ["the cat sat on a mat", "dog", "a big red house by the river in the city", "sun and moon",
         "two blue trees", "hello world"]
ST_LIMIT = 12  # the sentence-transformers folder's max_seq_length


@pytest.fixture(scope="module")
def plain(session_dir) -> str:
    """A bare BertModel with no sentence-transformers files (mean pooling, unit length)."""
    return str(tc.built_once(session_dir / "tiny-embedding", tc.build_embedding))


@pytest.fixture(scope="module")
def st_cls(plain, tmp_path_factory) -> str:
    """The same weights as a sentence-transformers folder asking for CLS pooling and no Normalize step."""
    folder = tmp_path_factory.mktemp("embed") / "st-cls"
    shutil.copytree(plain, folder)
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    _write_json(folder / "1_Pooling" / "config.json", {"word_embedding_dimension": 32, "pooling_mode_cls_token": True,
                                                       "pooling_mode_mean_tokens": False})
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": ST_LIMIT, "do_lower_case": False})
    return str(folder)


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


@pytest.fixture(scope="module")
def by_hand(plain):
    """Each text's token states from plain transformers, one text at a time (no padding at all)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(plain), AutoModel.from_pretrained(plain).eval()

    def states(text: str, max_length: int | None = None) -> numpy.ndarray:
        batch = tokenizer(text, return_tensors="pt", truncation=max_length is not None, max_length=max_length)
        with torch.inference_mode():
            return model(**batch).last_hidden_state[0].numpy()

    return states


def _unit(vector: numpy.ndarray) -> numpy.ndarray:
    return vector / numpy.linalg.norm(vector)


def _vectors(stdout: str) -> tuple[list, numpy.ndarray]:
    records = [json.loads(line) for line in stdout.splitlines()]
    assert all(list(record) == ["id", "embedding"] for record in records)
    return [record["id"] for record in records], numpy.array([record["embedding"] for record in records])


def _lines(tmp_path: Path, texts: list[str], name: str = "in.txt") -> str:
    path = tmp_path / name
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return str(path)


def test_stdin_lines_give_the_mean_of_the_token_states_at_unit_length_in_input_order(cli, plain, by_hand):
    # A batch smaller than the input, and texts of very different lengths: sorted to run, written in order.
    result = cli("embed", "-m", plain, "--batch-size", "2", input="\n".join(TEXTS[:3]) + "\n\n" + "\n".join(TEXTS[3:]))
    assert result.exit_code == 0, result.stderr
    ids, vectors = _vectors(result.stdout)
    assert ids == [1, 2, 3, 5, 6, 7]  # line numbers; the blank line 4 has no vector
    expected = numpy.array([_unit(by_hand(text).mean(0)) for text in TEXTS])
    numpy.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_the_sentence_transformers_config_chooses_cls_pooling_and_no_normalising(cli, st_cls, by_hand):
    result = cli("embed", "-m", st_cls, "--input", "-", "--batch-size", "4", input="\n".join(TEXTS) + "\n")
    assert result.exit_code == 0, result.stderr
    _ids, vectors = _vectors(result.stdout)
    numpy.testing.assert_allclose(vectors, [by_hand(text)[0] for text in TEXTS], atol=1e-5)
    assert not numpy.allclose(numpy.linalg.norm(vectors, axis=1), 1.0)  # no Normalize step in its modules.json


@pytest.mark.parametrize("flag, unit", [("--normalize", True), ("--no-normalize", False)])
def test_normalize_flags_override_the_models_own_choice(cli, plain, st_cls, by_hand, flag, unit):
    model = st_cls if unit else plain  # each model's default is the other way round
    _ids, (vector,) = _vectors(cli("embed", TEXTS[0], "-m", model, flag).stdout)
    states = by_hand(TEXTS[0])
    pooled = states[0] if model == st_cls else states.mean(0)
    numpy.testing.assert_allclose(vector, _unit(pooled) if unit else pooled, atol=1e-5)


def test_jsonl_records_keep_their_ids_and_an_interrupted_output_resumes(cli, plain, tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": f"doc-{i}", "text": text, "lang": "en"}) + "\n"
                              for i, text in enumerate(TEXTS)), encoding="utf-8")
    full, partial = tmp_path / "full.jsonl", tmp_path / "vecs.jsonl"
    args = ["embed", "--input", str(source), "-m", plain, "--batch-size", "2"]
    assert cli(*args, "-o", full).exit_code == 0
    assert cli(*args, "-o", partial).exit_code == 0
    lines = partial.read_text().splitlines(keepends=True)
    partial.write_text("".join(lines[:2]) + lines[2][:40])  # two whole records and a torn third, as a kill leaves
    resumed = cli(*args, "-o", partial)
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming: 2 results" in resumed.stderr and "torn" in resumed.stderr
    ids, vectors = _vectors(partial.read_text())
    full_ids, full_vectors = _vectors(full.read_text())
    assert ids == full_ids == [f"doc-{i}" for i in range(len(TEXTS))]
    numpy.testing.assert_allclose(vectors, full_vectors, atol=1e-6)
    assert "nothing to do" in cli(*args, "-o", partial).stderr
    changed = cli("embed", "--input", str(source), "-m", plain, "--no-normalize", "-o", partial)
    assert changed.exit_code == 2 and "--normalize" in changed.stderr


def test_npy_holds_the_jsonl_vectors_and_a_finished_run_is_not_redone(cli, plain, tmp_path):
    source = _lines(tmp_path, TEXTS)
    jsonl = cli("embed", "--input", source, "-m", plain)
    array_path = tmp_path / "vecs.npy"
    made = cli("embed", "--input", source, "-m", plain, "-o", array_path, "--batch-size", "4")
    assert made.exit_code == 0, made.stderr
    array = numpy.load(array_path)
    assert array.dtype == numpy.float32 and array.shape == (len(TEXTS), 32)
    numpy.testing.assert_allclose(array, _vectors(jsonl.stdout)[1], atol=1e-6)
    again = cli("embed", "--input", source, "-m", plain, "-o", array_path, "--format", "npy")
    assert again.exit_code == 0 and "nothing to do" in again.stderr
    more = _lines(tmp_path, TEXTS + ["one more"], "more.txt")
    grown = cli("embed", "--input", more, "-m", plain, "-o", array_path)
    assert grown.exit_code == 2 and "--overwrite" in grown.stderr  # an array is not appended to
    assert numpy.array_equal(numpy.load(array_path), array)


def test_npy_needs_an_output_file_and_a_file_gptcli_did_not_write_is_left_alone(cli, plain, tmp_path):
    no_file = cli("embed", "the cat", "-m", plain, "--format", "npy")
    assert no_file.exit_code == 2 and "--output" in no_file.stderr
    theirs = tmp_path / "theirs.npy"
    theirs.write_bytes(b"not ours")
    refused = cli("embed", "the cat", "-m", plain, "-o", theirs, "--overwrite")
    assert refused.exit_code == 2 and "not written by gptcli" in refused.stderr
    assert theirs.read_bytes() == b"not ours"


@pytest.mark.parametrize("content, expected", [
    ('{"text": "the cat"}\n{"id": 2}\n', "in.jsonl:2: missing field 'text'"),
    ('{"text": "the cat"}\n{"text": 7}\n', "in.jsonl:2: field 'text' must be a string"),
    ('{"text": "the cat"}\n{"text": "dog"\n', "in.jsonl:2"),
])
def test_bad_input_is_one_line_naming_file_line_and_field_before_any_model_loads(cli, tmp_path, content, expected):
    path = tmp_path / "in.jsonl"
    path.write_text(content, encoding="utf-8")
    # A model that does not exist: the input must be refused first.
    result = cli("embed", "--input", path, "-m", str(tmp_path / "no-such-model"))
    assert result.exit_code == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_text_over_the_limit_is_an_error_with_its_line_and_both_numbers(cli, st_cls, tmp_path):
    long_text = " ".join(["the cat sat"] * 6)  # 18 words + [CLS] [SEP] = 20 tokens, over the folder's 12
    source = _lines(tmp_path, ["dog", long_text])
    result = cli("embed", "--input", source, "-m", st_cls, "-o", tmp_path / "out.jsonl")
    assert result.exit_code == 2
    assert f"{source}:2 is 20 tokens, more than the embedding model's limit of {ST_LIMIT} tokens" in result.stderr
    assert "--truncate" in result.stderr
    assert (tmp_path / "out.jsonl").read_text() == ""  # refused before the first vector


def test_truncate_cuts_to_the_limit_and_says_how_many_were_cut(cli, st_cls, by_hand, tmp_path):
    long_text = " ".join(["the cat sat"] * 6)
    result = cli("embed", "--input", _lines(tmp_path, ["dog", long_text]), "-m", st_cls, "--truncate")
    assert result.exit_code == 0, result.stderr
    assert "1 of 2 texts were longer than the embedding model's limit of 12 tokens" in result.stderr
    _ids, vectors = _vectors(result.stdout)
    numpy.testing.assert_allclose(vectors[1], by_hand(long_text, max_length=ST_LIMIT)[0], atol=1e-5)


def test_a_step_gptcli_cannot_run_is_refused_by_name(cli, plain, tmp_path):
    folder = tmp_path / "st-dense"
    shutil.copytree(plain, folder)
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}])
    result = cli("embed", "the cat", "-m", folder)
    assert result.exit_code == 2 and "Dense step (2_Dense)" in result.stderr


def test_a_decoder_with_lasttoken_pooling_gives_its_last_token_state(cli, tiny_llama, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path / "st-llama"
    shutil.copytree(tiny_llama, folder)
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    _write_json(folder / "1_Pooling" / "config.json", {"word_embedding_dimension": 64, "pooling_mode": "lasttoken"})
    result = cli("embed", "-m", folder, "--batch-size", "3", input="\n".join(TEXTS) + "\n")
    assert result.exit_code == 0, result.stderr
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        last = [model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0, -1].numpy() for text in TEXTS]
    numpy.testing.assert_allclose(_vectors(result.stdout)[1], [_unit(v) for v in last], atol=1e-5)


def test_the_server_route_and_classify_embed_through_the_same_service(cli, st_cls):
    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import EMBEDDING
    from gptcli.server.embeddings import _embed
    from gptcli.services.classify_encoders import embed as classify_embed

    lm = load_model(LoadOptions(st_cls, "cpu", "float32"), accept=(EMBEDDING,), command="embed")
    _ids, command = _vectors(cli("embed", "-m", st_cls, input="\n".join(TEXTS) + "\n").stdout)
    served, tokens = _embed(lm, TEXTS)
    numpy.testing.assert_allclose(served, command, atol=1e-6)  # /v1/embeddings: the command's vectors
    assert tokens == [len(lm.tokenizer(text)["input_ids"]) for text in TEXTS]
    scored, _ = classify_embed(lm, TEXTS, 4)  # classify: the model's pooling, always at unit length
    numpy.testing.assert_allclose(scored.numpy(), [_unit(v) for v in command], atol=1e-6)


def test_the_default_model_is_the_packaged_minilm_at_unit_length_with_a_quiet_stderr(cli):
    result = cli("embed", "The cat sat on the mat.")
    assert result.exit_code == 0 and result.stderr == ""
    _ids, (vector,) = _vectors(result.stdout)
    assert vector.shape == (384,) and numpy.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
