"""`gptcli classify` end to end on tiny models: stdout, --json, stdin lines, --input, --output resume, errors."""

from __future__ import annotations

import json

import pytest

from tests.tasks import tiny_classifiers as tc

EXACT = ["--label-template", "{}"]  # a text equal to a label description matches it exactly


@pytest.fixture(scope="module")
def embedder(session_dir):
    return str(tc.built_once(session_dir / "tiny-embedding", tc.build_embedding))


@pytest.fixture(scope="module")
def nli(session_dir):
    return str(tc.built_once(session_dir / "tiny-nli", tc.build_nli))


def test_stdout_carries_only_the_label(cli, embedder):
    result = cli("classify", "blue river", "--labels", "red house,blue river", "-m", embedder, *EXACT)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "blue river\n"


def test_json_gives_every_label_score_summing_to_one(cli, embedder):
    result = cli("classify", "red house", "--labels", "red house,blue river,two dogs", "-m", embedder, "--json",
                 *EXACT)
    record = json.loads(result.stdout)
    assert record["label"] == "red house" and record["text"] == "red house"
    assert list(record["scores"]) == ["red house", "blue river", "two dogs"]
    assert sum(record["scores"].values()) == pytest.approx(1.0, abs=1e-5)


def test_many_stdin_lines_keep_their_order_and_blank_lines_stay_blank(cli, embedder):
    texts = ["red house", "blue river", "two dogs"] * 7
    lines = texts[:5] + [""] + texts[5:]
    result = cli("classify", "--labels", "red house,blue river,two dogs", "-m", embedder, *EXACT,
                 "--batch-size", "4", input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == lines


def test_multi_label_prints_every_label_over_the_threshold(cli, nli):
    args = ["classify", "the sun", "--labels", "sea,city,tree", "-m", nli, "--multi-label"]
    scores = json.loads(cli(*args, "--json").stdout)["scores"]
    ranked = sorted(scores, key=scores.get, reverse=True)
    between = (scores[ranked[0]] + scores[ranked[1]]) / 2
    assert cli(*args, "--threshold", f"{between:.6f}").stdout == f"{ranked[0]}\n"
    low = min(scores.values()) - 1e-4
    assert set(cli(*args, "--threshold", f"{low:.6f}").stdout.strip().split(",")) == set(scores)
    high = max(scores.values()) + 1e-4
    none = cli(*args, "--threshold", f"{high:.6f}", "--json")
    assert none.exit_code == 0 and json.loads(none.stdout)["labels"] == []
    assert cli(*args, "--threshold", f"{high:.6f}").stdout == "\n"  # no label: an empty line


def test_labels_file_gives_the_labels(cli, embedder, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("red house\n\nblue river\n")
    result = cli("classify", "blue river", "--labels-file", labels, "-m", embedder, *EXACT, "--json")
    assert result.exit_code == 0, result.stderr
    assert list(json.loads(result.stdout)["scores"]) == ["red house", "blue river"]


def test_jsonl_input_carries_ids_and_fields_and_output_resumes(cli, embedder, tmp_path):
    source = tmp_path / "in.jsonl"
    rows = [{"id": f"r{i}", "text": text, "lang": "en"} for i, text in
            enumerate(["red house", "blue river", "two dogs", "red house"])]
    out = tmp_path / "out.jsonl"
    args = ["classify", "--input", source, "--output", out, "--labels", "red house,blue river,two dogs",
            "-m", embedder, *EXACT]
    source.write_text(json.dumps(rows[0]) + "\n")  # an earlier run: one result, then a torn line
    assert cli(*args).exit_code == 0
    first = out.read_text()
    with open(out, "a") as handle:
        handle.write('{"id": "r1", "te')
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and "torn" in result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["r0", "r1", "r2", "r3"]
    assert out.read_text().startswith(first)  # kept, not redone
    assert [r["label"] for r in records[1:]] == ["blue river", "two dogs", "red house"]
    assert all(r["lang"] == "en" for r in records)
    again = cli(*args)
    assert "nothing to do" in again.stderr and len(out.read_text().splitlines()) == 4


@pytest.mark.parametrize("labels,message", [
    (",", "is empty"), ("a,,b", "blank label"), ("pos,neg,pos", "repeats the label 'pos'"), ("", "is empty"),
])
def test_bad_labels_exit_2_with_one_line_before_loading(cli, labels, message):
    result = cli("classify", "text", "--labels", labels, "-m", "/no/such/model")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("args,message", [
    (["--labels", "a,b", "--threshold", "0.3"], "--threshold applies to --multi-label"),
    (["--labels", "a,b", "--multi-label", "--threshold", "1.5"], "between 0 and 1"),
    ([], "give the labels"),
    (["--labels", "a,b", "--labels-file", "x.txt"], "not both"),
])
def test_bad_options_exit_2(cli, args, message):
    result = cli("classify", "text", *args)
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_a_classifier_with_its_own_labels_needs_none(cli, tiny_bert):
    result = cli("classify", "the cat", "-m", tiny_bert, "--json")
    assert result.exit_code == 0, result.stderr
    assert set(json.loads(result.stdout)["scores"]) == {"negative", "positive"}
    refused = cli("classify", "the cat", "-m", tiny_bert, "--labels", "a,b")
    assert refused.exit_code == 2 and "drop --labels" in refused.stderr


def test_seq2seq_model_is_refused_with_exit_2(cli, session_dir):
    folder = tc.built_once(session_dir / "tiny-t5", tc.build_t5)
    result = cli("classify", "the cat", "--labels", "a,b", "-m", folder)
    assert result.exit_code == 2
    assert "encoder-decoder" in result.stderr and "classify" in result.stderr


def test_stats_go_to_stderr(cli, embedder):
    result = cli("classify", "two dogs", "--labels", "red house,two dogs", "-m", embedder, *EXACT, "--stats")
    assert result.stdout == "two dogs\n"
    assert "texts/s" in result.stderr
