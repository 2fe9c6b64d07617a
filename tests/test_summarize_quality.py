"""summarize's output hygiene: template artefacts stripped, loops cut, sentence counts kept, cut summaries
reported; on text the default model (SmolLM2-135M) really wrote, and end to end on that model."""

from __future__ import annotations

import json

import pytest

from gptcli.services import textclean

# Outputs SmolLM2-135M-Instruct wrote on the XSum / Gigaword train articles (issue 12's measurements).
LOOPED = ("The storm in the Netherlands was not a tornado, but weather experts confirmed that it was a supercell. "
          "The storm in the Netherlands was not a tornado, but weather experts confirmed that it was a supercell. "
          "The storm was")
RESTATED = "Summarize the text: The Palestinian leader condemned the double suicide bomb attack in Gaza on Thursday."
ARTICLE = ("The warning begins at 22:00 GMT on Saturday and ends at 10:00 on Sunday.\nThe ice could lead to difficult "
           "driving conditions on untreated roads and slippery conditions on pavements, the weather service warned.\n"
           "Only the southernmost counties and parts of the most westerly counties are expected to escape.")


def test_a_sentence_said_twice_is_cut_at_its_first_copy():
    text, looped = textclean.cut_repetition(LOOPED)
    assert looped and text.endswith("it was a supercell.") and text.count("The storm") == 1


def test_a_word_run_repeated_in_a_row_is_cut_but_prose_is_not():
    text, looped = textclean.cut_repetition("Ceştere de cunu de cunu în cunu de cunu în cunu de cunu în")
    assert looped and text == "Ceştere de cunu de cunu în"
    assert textclean.cut_repetition("It was very very very good.") == ("It was very very very good.", False)
    assert textclean.cut_repetition("He said no, no and no.")[1] is False


@pytest.mark.parametrize("raw,clean", [
    ("Summary: The cat sat.", "The cat sat."),
    ("Here is a one-sentence summary of the text:\n\nThe cat sat. Summary:", "The cat sat."),
    ("**Summary:** The cat sat.", "The cat sat."),
    (RESTATED, RESTATED.split(": ", 1)[1]),
    ("Note: the sea is cold.", "Note: the sea is cold."),  # a colon in the answer itself stays
    ("The court said: no.", "The court said: no."),
    ("The article is about cats.\nSummary:", "The article is about cats."),
    ("She read the text", "She read the text"),  # a label word ending a sentence is the answer's own
    ("He left a note", "He left a note"),
    ("Please send the translation", "Please send the translation"),
    ("A good summary", "A good summary"),
])
def test_template_artefacts_are_stripped(raw, clean):
    assert textclean.strip_artefacts(raw) == clean


def test_a_sentence_restating_the_instruction_is_dropped():
    instruction = "\n\nSummarize the text above in one sentence. Reply with the summary only."
    text = "Summarize the text above in one sentence. Ice is expected across Wales on Saturday night."
    assert textclean.strip_artefacts(text, instruction) == "Ice is expected across Wales on Saturday night."


def test_sentences_are_split_past_abbreviations_initials_and_decimals():
    text = "Mr. Smith met J. Doe at 2.5 pm. They left. And then"
    assert [text[a:b].strip() for a, b in textclean.sentence_spans(text)] == [
        "Mr. Smith met J. Doe at 2.5 pm.", "They left.", "And then"]
    assert textclean.first_sentences(text, 1) == ("Mr. Smith met J. Doe at 2.5 pm.", True)
    assert textclean.drop_unfinished(text) == "Mr. Smith met J. Doe at 2.5 pm. They left."
    assert textclean.drop_unfinished("And then") == "And then"  # nothing whole to keep: left as it is
    assert textclean.ends_sentence('He said "yes."') and not textclean.ends_sentence("He said Mr.")


@pytest.mark.parametrize("length,sentences", [("short", 1), ("medium", 3)])
def test_default_model_summaries_end_whole_and_clean(cli, default_model_available, tmp_path, length, sentences):
    data = tmp_path / "docs.jsonl"
    data.write_text(json.dumps({"id": 1, "text": ARTICLE}) + "\n")
    result = cli("summarize", "--input", str(data), "--json", "--length", length)
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    summary = record["summary"]
    assert summary and len(textclean.sentence_spans(summary)) <= sentences
    assert "summary" not in summary.lower()[:20] and not summary.lower().startswith(("here", "summari"))
    assert textclean.cut_repetition(summary)[1] is False
    if record["finish_reason"] == "length":  # cut by the budget: only then may it end mid-sentence, and it says so
        assert "stopped at its limit" in result.stderr
    else:
        assert record["finish_reason"] in ("eos", "stop") and textclean.ends_sentence(summary)


def test_a_budget_cut_summary_is_length_and_warned(cli, default_model_available, tmp_path):
    result = cli("summarize", ARTICLE, "--json", "--max-new-tokens", "5")
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["finish_reason"] == "length" and record["generated_tokens"] == 5
    assert "stopped at its limit of 5 tokens" in result.stderr
