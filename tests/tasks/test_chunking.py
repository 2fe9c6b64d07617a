"""Splitting text to a token budget: natural boundaries first, nothing lost, every piece fits."""

from __future__ import annotations

import pytest

from gptcli.services.chunking import TokenCounter, rejoin, split_sentences, split_to_fit
from tests import tiny_models


@pytest.fixture(scope="module")
def counter():
    return TokenCounter(tiny_models.train_tokenizer(chat=False))


def _words(text: str) -> list[str]:
    return text.split()


def test_text_that_fits_is_one_piece(counter):
    assert split_to_fit("  the cat sat.  ", 50, counter) == ["the cat sat."]
    assert split_to_fit("   ", 50, counter) == []


def test_paragraphs_are_kept_whole_when_they_fit(counter):
    paragraphs = [f"paragraph {i} the cat sat on a mat." for i in range(6)]
    budget = counter.count(paragraphs[0]) * 2 + 4
    pieces = split_to_fit("\n\n".join(paragraphs), budget, counter)
    assert len(pieces) > 1
    assert all(counter.count(p) <= budget for p in pieces)
    # Each piece is whole paragraphs: no paragraph is cut between pieces.
    assert [para for piece in pieces for para in piece.split("\n\n")] == paragraphs


def test_a_long_paragraph_splits_on_sentences(counter):
    sentences = [f"the dog ran to the river number {i}." for i in range(10)]
    budget = counter.count(sentences[0]) + 2
    pieces = split_to_fit(" ".join(sentences), budget, counter)
    assert pieces == sentences


def test_a_sentence_without_boundaries_splits_on_words_then_tokens(counter):
    long_sentence = " ".join(["red blue house tree"] * 20)
    pieces = split_to_fit(long_sentence, 10, counter)
    assert all(counter.count(p) <= 10 for p in pieces)
    assert _words(" ".join(pieces)) == _words(long_sentence)
    one_word = "x" * 200  # no space at all: token windows are the last resort
    pieces = split_to_fit(one_word, 7, counter)
    assert len(pieces) > 1 and all(counter.count(p) <= 7 for p in pieces) and "".join(pieces) == one_word


def test_nothing_is_lost_in_a_mixed_document(counter):
    text = "\n\n".join(" ".join(tiny_models.corpus(8, seed=s)) for s in range(5))
    pieces = split_to_fit(text, 30, counter)
    assert all(counter.count(p) <= 30 for p in pieces)
    assert _words(" ".join(pieces)) == _words(text)


def test_cjk_sentences_split_and_rejoin_without_spaces():
    assert split_sentences("今天天气很好。我们去公园吧！好的。") == ["今天天气很好。", "我们去公园吧！", "好的。"]
    assert rejoin(["今天天气很好。", "我们去公园吧！"]) == "今天天气很好。我们去公园吧！"
    assert rejoin(["Good morning.", "", "How are you?"]) == "Good morning. How are you?"
