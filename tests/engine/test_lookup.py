"""Prompt lookup finds what followed the last tokens where they appeared before."""

from gptcli.engine.lookup import PromptLookup


def test_the_latest_earlier_run_gives_the_draft():
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8, 1, 2], ngram=2)
    assert lookup.draft(3) == [3, 7, 8]  # after the latest earlier (1, 2), not the first
    lookup.append(3)
    assert lookup.draft(2) == [7, 8]


def test_no_draft_without_an_earlier_run_or_room():
    assert PromptLookup([1, 2, 3, 4], ngram=2).draft(4) == []
    assert PromptLookup([1, 2, 1, 2], ngram=2).draft(0) == []
    assert PromptLookup([5], ngram=3).draft(4) == []


def test_a_draft_stops_at_the_end_of_what_is_known():
    lookup = PromptLookup([4, 5, 6, 4, 5], ngram=2)
    assert lookup.draft(8) == [6, 4, 5]
