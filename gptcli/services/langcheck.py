"""A cheap check that a translation is in the language asked for: its script, or its commonest words.

Not a language identifier: it answers only "is this plausibly the target language, or plainly another
one?" for the languages it knows (a script of their own, or a list of function words), and "unknown"
otherwise, so a caller can retry a line or warn rather than pass wrong-language output on silently.
"""

from __future__ import annotations

import re
import unicodedata

OK, WRONG, UNKNOWN = "ok", "wrong", "unknown"

# Languages with a script of their own: the Unicode name prefix of their letters.
_SCRIPTS = {"ru": "CYRILLIC", "uk": "CYRILLIC", "bg": "CYRILLIC", "mk": "CYRILLIC", "sr": "CYRILLIC",
            "kk": "CYRILLIC", "el": "GREEK", "he": "HEBREW", "ar": "ARABIC", "fa": "ARABIC", "ur": "ARABIC",
            "hi": "DEVANAGARI", "bn": "BENGALI", "ta": "TAMIL", "th": "THAI", "ka": "GEORGIAN", "hy": "ARMENIAN",
            "ko": "HANGUL", "zh": "CJK", "ja": "CJK"}
# The commonest short words of some Latin-script languages (a dozen or so each, from general frequency lists).
_WORDS = {
    "en": "the of and to is in that it was for you he with on are this not have be at but they what",
    "ro": "și să nu de în este la un o pe cu că sunt ce mai am pentru a fost foarte acest",
    "fr": "le la les et est une des pas que je vous il dans pour ce qui sur avec sont très",
    "de": "der die das und ist nicht ich ein eine zu es sie mit den auf für sich auch wir",
    "es": "el la los las y es que de en un una no por con para se muy está del",
    "it": "il la le di che è e non un una per sono con del della ho mi questo",
    "pt": "o a os as e é que de não um uma em para com do da se muito está",
    "nl": "de het een en is niet van ik dat in te je op zijn met voor er",
    "fi": "ja on ei se että hän oli ovat minä olen mutta kun tämä hänen mitä ole",
    "sv": "och är att det en inte jag som på har med för den till var",
    "pl": "i w nie na się jest to że z do jak co ale tak jestem",
    "cs": "a je se v na to že ne jsem s do jak ale by tak",
    "tr": "bir ve bu da de ne çok için ben mi değil var ile",
}
_WORD_SETS = {code: set(words.split()) for code, words in _WORDS.items()}


def check(text: str, target: str, source: str | None = None) -> str:
    """OK when ``text`` looks like ``target`` (an ISO 639-1 code), WRONG when it plainly looks like another
    language (the source, or another known one), UNKNOWN when the check cannot tell (a language it does not
    know, or too few words: names and numbers stay as they are in any language)."""
    letters = [c for c in text if c.isalpha()]
    if len(letters) < 4:
        return UNKNOWN
    script = _SCRIPTS.get(target)
    if script is not None:
        share = sum(_script_of(c) == script for c in letters) / len(letters)
        return OK if share >= 0.5 else WRONG
    if target not in _WORD_SETS:
        return UNKNOWN
    if sum(_script_of(c) == "LATIN" for c in letters) / len(letters) < 0.5:
        return WRONG  # a Latin-script language asked for, another script written
    words = re.findall(r"\w+", text.lower())
    hits = {code: sum(w in vocabulary for w in words) for code, vocabulary in _WORD_SETS.items()}
    best = max(hits, key=lambda code: (hits[code], code == target))
    if hits[best] == 0 or hits[best] == hits[target]:
        return OK if hits[target] else UNKNOWN
    # Another language's words clearly outnumber the target's: the source copied, or a third language.
    return WRONG if hits[best] >= 2 and hits[best] > 2 * hits[target] else OK


def _script_of(char: str) -> str:
    name = unicodedata.name(char, "")
    if name.startswith(("CJK", "HIRAGANA", "KATAKANA")):
        return "CJK"
    return name.split(" ")[0]
