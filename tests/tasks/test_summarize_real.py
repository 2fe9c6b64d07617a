"""summarize and translate with the real default model (SmolLM2-135M-Instruct), offline."""

from __future__ import annotations

import re

import pytest

from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM
from gptcli.services.summarize import Summarizer, SummarizeParams

PARAGRAPH = (
    "The Great Barrier Reef, off the coast of Queensland in Australia, is the largest coral reef system in the "
    "world. It stretches for over 2,300 kilometres and is made up of nearly 3,000 individual reefs and 900 "
    "islands. The reef supports an enormous diversity of life, including many species of fish, turtles, sharks "
    "and whales. In recent decades, rising ocean temperatures have caused repeated mass bleaching events, in "
    "which corals expel the algae that give them colour and food. Scientists warn that without rapid cuts in "
    "greenhouse gas emissions, much of the reef could be lost by the end of the century.")

TOPICS = [
    "The town bakery opened in 1921. Its bread is baked in a wood oven every morning before dawn, and the queue "
    "often reaches the end of the street. The owners still use the sourdough starter of the first baker.",
    "The river that runs through the valley floods every spring. Farmers built stone walls along its banks to "
    "protect their fields, and a small museum now tells the story of the great flood of 1953.",
    "The local football club plays in blue and white. It won the regional cup three times, and its stadium, "
    "built by volunteers, holds four thousand people on match days.",
    "Every August the village holds a music festival. Bands from all over the country play on a stage in the "
    "main square, and the festival ends with fireworks over the lake.",
    "The old lighthouse on the island of Zanzibar was restored last year. Its lamp, made in Scotland in 1880, "
    "can be seen from forty kilometres away, and visitors can now climb its 150 steps.",
]


@pytest.fixture(scope="module")
def default_lm(default_model_available):
    return load_model(LoadOptions(None), accept=(CAUSAL_LM,), command="summarize")


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 4}


def test_default_model_summarizes_a_real_paragraph(cli, default_model_available):
    result = cli("summarize", "--length", "short", "--json", input=PARAGRAPH)
    assert result.exit_code == 0, result.stderr
    import json

    summary = json.loads(result.stdout)["summary"]
    assert 20 < len(summary) < len(PARAGRAPH)
    assert len(_words(summary) & {"barrier", "coral", "queensland", "australia", "bleaching", "ocean",
                                  "temperatures", "species"}) >= 3, summary


def test_default_model_long_document_reaches_its_last_paragraph(default_lm):
    # Five sections of about 220 tokens, one topic each; the lighthouse of Zanzibar comes last.
    document = "\n\n".join("\n\n".join([topic] * 5) for topic in TOPICS)
    calls = []
    params = SummarizeParams(length="short", batch_size=8, max_input_tokens=200)
    summarizer = Summarizer(default_lm, params, trace=calls.append)
    (summary,) = summarizer.summarize([(document, "doc")])
    assert summary.input_tokens >= 5 * 200 and summary.levels >= 1
    assert "Zanzibar" in [c for c in calls if c.stage == "map"][-1].text
    final = [c for c in calls if c.stage == "final"]
    assert len(final) == 1 and "Zanzibar" in final[0].text, final[0].text
    assert summary.text.strip()


def test_default_model_translation_is_line_true(cli, default_model_available):
    text = "Good morning.\n\nThank you very much.\n"
    result = cli("translate", "--to", "fr", "--from", "en", input=text)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == "" and lines[0] and lines[2]
