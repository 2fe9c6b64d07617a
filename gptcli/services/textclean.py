"""What a small instruct model writes around its answer, and how to keep only the answer.

Summaries and translations from a 135M model come with template artefacts ("Summary:",
"Here is the translation:"), repetition loops ("...and a try by Ford, and a try by Ford, ...")
and a last sentence cut by the token budget. These functions find each, on plain text, so the
services can keep what the user asked for and say why they stopped.
"""

from __future__ import annotations

import re

# A sentence ends at . ! ? (or …), optionally closed by quotes/brackets, before a space or the end.
# Not after a one-letter initial (J. Smith), a common abbreviation, or between digits (2.5).
_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "etc", "inc", "ltd", "co", "corp",
                  "gen", "gov", "sen", "rep", "lt", "col", "capt", "no", "jan", "feb", "mar", "apr", "aug", "sept",
                  "oct", "nov", "dec", "u.s", "u.k", "e.g", "i.e", "dl", "dna", "nr"}
_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s|$)")
# Lead-ins a chat model puts before its answer: "Summary:", "Here is a one-sentence summary:",
# "Sure! Here's the translation:", "Romanian translation:", "**Summary**".
_LEAD_IN = re.compile(
    r"^\s*(?:\*\*)?(?:(?:sure|okay|ok|certainly)[!,.]?\s*)?"
    r"(?:here(?:'s| is| are)\s+(?:a|an|the|my|your)?\s*[^:\n]{0,60}?|(?:summari[sz]e|translate)[^:\n.]{0,60}|"
    r"(?:the\s+)?(?:summary|translation|translated text|answer|tl;?dr|[A-Z][a-z]+(?: translation)?)\s*"
    r"(?:\([^)\n]{0,30}\))?)\s*:(?:\*\*)?\s*", re.IGNORECASE)
_LABEL_WORDS = ("summary", "translation", "translated", "answer", "tl;dr", "tldr", "here", "summarize", "summarise",
                "translate")
# A label left dangling at the end stands alone: on its own line or after a sentence's end ("... sat. Summary:"),
# never the last word of a sentence ("I read the text").
_TRAILING_LABEL = re.compile(r"(?:^|\n|(?<=[.!?…]))\s*(?:\*\*)?(?:summary|translation|note|text)\s*:?(?:\*\*)?\s*$",
                             re.IGNORECASE)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence in ``text``; the last span may be an unfinished sentence."""
    spans, start = [], 0
    for match in _END.finditer(text):
        if _is_abbreviation(text, match.start()):
            continue
        end = match.end()
        if text[start:end].strip():
            spans.append((start, end))
        start = end
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _is_abbreviation(text: str, dot: int) -> bool:
    if text[dot] != ".":
        return False
    word = re.search(r"([\w.]+)$", text[:dot])
    if word is None:
        return False
    token = word.group(1).lower()
    return len(token) == 1 and token.isalpha() or token in _ABBREVIATIONS


def ends_sentence(text: str) -> bool:
    """Whether ``text`` ends at the end of a sentence (not cut in the middle of one)."""
    stripped = text.rstrip()
    if not stripped:
        return True
    match = None
    for match in _END.finditer(stripped):
        pass
    return match is not None and match.end() == len(stripped) and not _is_abbreviation(stripped, match.start())


def first_sentences(text: str, count: int) -> tuple[str, bool]:
    """The first ``count`` sentences of ``text``, and whether anything after them was dropped."""
    spans = sentence_spans(text)
    if len(spans) <= count:
        return text.strip(), False
    return text[:spans[count - 1][1]].strip(), True


def drop_unfinished(text: str) -> str:
    """``text`` without a last sentence that was cut off, when a whole sentence comes before it."""
    if ends_sentence(text):
        return text.strip()
    spans = sentence_spans(text)
    if len(spans) < 2:
        return text.strip()
    return text[:spans[-2][1]].strip()


def strip_artefacts(text: str, instruction: str = "") -> str:
    """The answer without the chat model's wrapping: a lead-in label ("Summary:"), a label left dangling at
    the end, surrounding quotes, and sentences that restate ``instruction``."""
    text = text.strip()
    for _ in range(2):  # "Sure! Here is the summary:\n\nSummary: ..."
        match = _LEAD_IN.match(text)
        if match is None or not _is_label(match.group(0)):
            break
        text = text[match.end():].strip()
    text = _TRAILING_LABEL.sub("", text).strip()
    if len(text) > 1 and text[0] in "\"“" and text[-1] in "\"”" and text.count('"') <= 2:
        text = text[1:-1].strip()
    if instruction:
        text = _drop_restated(text, instruction)
    return text


def _is_label(lead: str) -> bool:
    """A lead-in is a label only if it names the answer ("Summary:", "Romanian:"), not a sentence with a colon."""
    words = lead.lower().replace("*", "").strip().rstrip(":").split()
    if not words:
        return False
    if any(w.strip("!,.'") in _LABEL_WORDS for w in words):
        return True
    return len(words) <= 2 and words[0] in _language_names()  # "Romanian:", "French translation:"


def _language_names() -> set[str]:
    from gptcli.services.languages import LANGUAGES

    return {name.lower() for name, _code in LANGUAGES.values()}


def _drop_restated(text: str, instruction: str) -> str:
    """Sentences of ``text`` that are mostly the instruction's words ("Summarize the text above in one sentence.")."""
    asked = set(_words(instruction))
    kept = []
    for start, end in sentence_spans(text):
        words = _words(text[start:end])
        if words and sum(w in asked for w in words) / len(words) >= 0.8 and len(words) >= 3:
            continue
        kept.append(text[start:end].strip())
    return " ".join(kept) if kept else text


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def cut_repetition(text: str, min_words: int = 3, repeats: int = 3) -> tuple[str, bool]:
    """``text`` up to where it starts repeating itself, and whether a loop was cut.

    Two kinds of loop: a sentence said again (the second copy and all after it go), and a
    run of ``min_words`` or more words repeated ``repeats`` times in a row ("in cunu de cunu
    in cunu de cunu ..."), cut after its first copy.
    """
    spans = sentence_spans(text)
    seen: set[str] = set()
    for index, (start, end) in enumerate(spans):
        key = " ".join(_words(text[start:end]))
        if key and key in seen and len(key.split()) >= min_words:
            return text[:spans[index - 1][1]].strip(), True
        seen.add(key)
    loop = _word_loop(text, min_words, repeats)
    if loop is not None:
        return text[:loop].rstrip(" ,;:-"), True
    return text.strip(), False


def _word_loop(text: str, min_words: int, repeats: int) -> int | None:
    """Character offset where the second copy of a repeated word run starts, or None.

    A single word needs one copy more (``repeats`` + 1) than a longer run: "very very very" is prose.
    """
    tokens = [(m.group(0).lower(), m.start()) for m in re.finditer(r"\w+", text)]
    words = [t for t, _ in tokens]
    for size in range(1, 9):
        copies = repeats + 1 if size == 1 else repeats
        if size * copies > len(words):
            break
        if size < min_words and size * copies < min_words + 1:
            continue
        for start in range(0, len(words) - size * copies + 1):
            unit = words[start:start + size]
            if all(words[start + k * size:start + (k + 1) * size] == unit for k in range(1, copies)):
                return tokens[start + size][1]
    return None
