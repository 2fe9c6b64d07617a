"""summarize on tiny models of each kind: prompts, prefixes, long documents, overflow policy, CLI."""

from __future__ import annotations

import json

import pytest

from gptcli.errors import InputError
from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM, SEQ2SEQ
from gptcli.services.summarize import Summarizer, SummarizeParams
from tests import tiny_models
from tests.tasks import tiny_seq2seq


@pytest.fixture(scope="session")
def long_llama(session_dir):
    """A tiny chat Llama with room for an instruction (512 tokens of context)."""
    return tiny_seq2seq.long_llama(session_dir)


@pytest.fixture(scope="session")
def tiny_t5(session_dir):
    return tiny_seq2seq.build_t5(session_dir / "sum-t5")


@pytest.fixture(scope="session")
def tiny_bart(session_dir):
    return tiny_seq2seq.build_bart(session_dir / "sum-bart")


def _load(folder, kind):
    return load_model(LoadOptions(str(folder)), accept=(kind,), command="summarize")


def _document(paragraphs: int, fact: str) -> str:
    body = [f"Part {i}. " + " ".join(tiny_models.corpus(6, seed=i)) for i in range(paragraphs - 1)]
    return "\n\n".join(body + [f"Finally. {fact}"])


def _run(lm, params, documents):
    calls = []
    summarizer = Summarizer(lm, params, trace=calls.append)
    return list(summarizer.summarize(documents)), calls, summarizer


@pytest.mark.parametrize("fixture,kind", [("long_llama", CAUSAL_LM), ("tiny_bart", SEQ2SEQ)])
def test_a_document_five_times_the_context_is_fully_covered(request, fixture, kind):
    lm = _load(request.getfixturevalue(fixture), kind)
    fact = "the secret word is zanzibar."
    document = _document(40, fact)
    params = SummarizeParams(max_new_tokens=8, batch_size=8)
    (summary,), calls, summarizer = _run(lm, params, [(document, "doc")])
    assert summary.input_tokens >= 5 * lm.context_length
    maps = [c for c in calls if c.stage == "map" and c.level == 0]
    finals = [c for c in calls if c.stage == "final"]
    # Every word went to the model exactly once, in order, and each chunk fitted.
    assert " ".join(c.text for c in maps).split() == document.split()
    assert fact in maps[-1].text
    assert all(summarizer._counter.count(c.text) <= summarizer.map_budget for c in maps)
    # The single final call read what the last level produced, the last chunk's summary included.
    assert len(finals) == 1 and summary.levels >= 1 and summary.chunks == len(maps)
    last_level = [c for c in calls if c.stage == "map" and c.level == summary.levels - 1]
    assert finals[0].text == "\n\n".join(c.output for c in last_level if c.output)
    assert summary.text == finals[0].output


def test_causal_lm_gets_the_instruction_through_its_chat_template(long_llama):
    lm = _load(long_llama, CAUSAL_LM)
    summarizer = Summarizer(lm, SummarizeParams(length="short"))
    ids = summarizer._runner.encode(summarizer._wrap("final", "the cat sat."))
    rendered = lm.tokenizer.decode(ids)
    assert rendered.startswith("<|im_start|>user\nthe cat sat.\n\nSummarize the text above in one sentence.")
    assert rendered.endswith("<|im_end|>\n<|im_start|>assistant\n")
    (summary,), calls, _ = _run(lm, SummarizeParams(length="short"), [("the cat sat on a mat.", "d")])
    assert summary.levels == 0 and summary.generated_tokens <= 60 and calls[0].stage == "final"


def test_t5_gets_its_summarize_prefix_and_bart_none(tiny_t5, tiny_bart):
    (summary,), calls, t5 = _run(_load(tiny_t5, SEQ2SEQ), SummarizeParams(max_new_tokens=4), [("the sun.", "d")])
    bart = Summarizer(_load(tiny_bart, SEQ2SEQ), SummarizeParams(max_new_tokens=4))
    assert t5._wrap("final", "the sun.") == "summarize: the sun."
    assert bart._wrap("final", "the sun.") == "the sun."
    assert calls[0].text == "the sun." and summary.input_tokens == t5._counter.count("the sun.")


def test_max_new_tokens_bounds_each_summary(tiny_bart):
    lm = _load(tiny_bart, SEQ2SEQ)
    results, _calls, _ = _run(lm, SummarizeParams(max_new_tokens=3), [("the cat sat.", "a"), ("a dog ran.", "b")])
    assert [r.index for r in results] == [0, 1]
    assert all(0 < r.generated_tokens <= 3 for r in results)


def test_overflow_error_and_truncate(tiny_bart):
    lm = _load(tiny_bart, SEQ2SEQ)
    document = _document(10, "the end.")
    with pytest.raises(InputError, match=r"doc is \d+ tokens; .* --overflow chunk"):
        _run(lm, SummarizeParams(max_new_tokens=4, overflow="error"), [(document, "doc")])
    (summary,), calls, summarizer = _run(lm, SummarizeParams(max_new_tokens=4, overflow="truncate"),
                                         [(document, "doc")])
    assert summary.truncated and len(calls) == 1
    assert summarizer._counter.count(calls[0].text) <= summarizer.final_budget
    assert "the end." not in calls[0].text


def test_cli_summarizes_stdin_as_one_document(cli, tiny_bart):
    text = "the cat sat on a mat.\nthe dog ran to the river.\n\nit was a big day."
    result = cli("summarize", "--model", tiny_bart, "--max-new-tokens", "4", "--json", input=text)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 1 and records[0]["id"] == 1 and records[0]["chunks"] == 1


def test_cli_batch_carries_fields_and_resumes(cli, tiny_bart, tmp_path):
    source = tmp_path / "docs.jsonl"
    docs = [json.dumps({"id": f"d{i}", "topic": "t", "text": f"the sun is red {i}."}) for i in range(3)]
    out = tmp_path / "out.jsonl"
    args = ("summarize", "--input", source, "--output", out, "--model", tiny_bart, "--max-new-tokens", "3")
    source.write_text(docs[0] + "\n")  # an earlier run that did the first document
    assert cli(*args).exit_code == 0
    out.write_text(json.dumps({**json.loads(out.read_text()), "summary": "kept"}) + "\n")
    source.write_text("\n".join(docs) + "\n")
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["d0", "d1", "d2"] and records[0]["summary"] == "kept"
    assert records[1]["topic"] == "t" and "text" not in records[1] and result.stdout == ""


def test_cli_errors_are_one_line_with_exit_2(cli, tiny_bart, tiny_bert):
    cases = [
        (("summarize", "--model", tiny_bert, "some text"), "needs a causal language model or an encoder-decoder"),
        (("summarize", "--model", tiny_bart, "--max-new-tokens", "4", "--overflow", "error", _document(10, "x.")),
         "--overflow chunk"),
        (("summarize", "--model", tiny_bart, "--max-input-tokens", "4", "x"), "at least 32"),
        (("summarize", "--model", tiny_bart, "  "), "empty"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
