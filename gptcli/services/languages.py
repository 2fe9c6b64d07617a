"""Language codes: the ISO 639-1 codes users type, mapped to each translation model's own codes.

NLLB names languages ``eng_Latn``, M2M100 ``en``, Marian pair models carry their
pair in the tokenizer (``source_lang``/``target_lang``) or name (``opus-mt-en-de``)
and multi-target ones a ``>>fr<<`` token, T5 a ``translate English to German: ``
prefix. ``plan_route`` turns (--from, --to) into what one model needs.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

from gptcli.errors import InputError, UsageError

# ISO 639-1 code -> (English name, NLLB-200 code). The 3-letter code (Marian's
# multilingual >>deu<< tokens) is the NLLB code's first part.
LANGUAGES: dict[str, tuple[str, str]] = {
    "af": ("Afrikaans", "afr_Latn"), "ar": ("Arabic", "arb_Arab"), "bg": ("Bulgarian", "bul_Cyrl"),
    "bn": ("Bengali", "ben_Beng"), "ca": ("Catalan", "cat_Latn"), "cs": ("Czech", "ces_Latn"),
    "cy": ("Welsh", "cym_Latn"), "da": ("Danish", "dan_Latn"), "de": ("German", "deu_Latn"),
    "el": ("Greek", "ell_Grek"), "en": ("English", "eng_Latn"), "es": ("Spanish", "spa_Latn"),
    "et": ("Estonian", "est_Latn"), "eu": ("Basque", "eus_Latn"), "fa": ("Persian", "pes_Arab"),
    "fi": ("Finnish", "fin_Latn"), "fr": ("French", "fra_Latn"), "ga": ("Irish", "gle_Latn"),
    "gl": ("Galician", "glg_Latn"), "he": ("Hebrew", "heb_Hebr"), "hi": ("Hindi", "hin_Deva"),
    "hr": ("Croatian", "hrv_Latn"), "hu": ("Hungarian", "hun_Latn"), "hy": ("Armenian", "hye_Armn"),
    "id": ("Indonesian", "ind_Latn"), "is": ("Icelandic", "isl_Latn"), "it": ("Italian", "ita_Latn"),
    "ja": ("Japanese", "jpn_Jpan"), "ka": ("Georgian", "kat_Geor"), "kk": ("Kazakh", "kaz_Cyrl"),
    "ko": ("Korean", "kor_Hang"), "lt": ("Lithuanian", "lit_Latn"), "lv": ("Latvian", "lvs_Latn"),
    "mk": ("Macedonian", "mkd_Cyrl"), "ms": ("Malay", "zsm_Latn"), "mt": ("Maltese", "mlt_Latn"),
    "nl": ("Dutch", "nld_Latn"), "no": ("Norwegian", "nob_Latn"), "pl": ("Polish", "pol_Latn"),
    "pt": ("Portuguese", "por_Latn"), "ro": ("Romanian", "ron_Latn"), "ru": ("Russian", "rus_Cyrl"),
    "sk": ("Slovak", "slk_Latn"), "sl": ("Slovenian", "slv_Latn"), "sq": ("Albanian", "als_Latn"),
    "sr": ("Serbian", "srp_Cyrl"), "sv": ("Swedish", "swe_Latn"), "sw": ("Swahili", "swh_Latn"),
    "ta": ("Tamil", "tam_Taml"), "th": ("Thai", "tha_Thai"), "tl": ("Tagalog", "tgl_Latn"),
    "tr": ("Turkish", "tur_Latn"), "uk": ("Ukrainian", "ukr_Cyrl"), "ur": ("Urdu", "urd_Arab"),
    "vi": ("Vietnamese", "vie_Latn"), "zh": ("Chinese", "zho_Hans"),
}
_NAMES = {name.lower(): code for code, (name, _nllb) in LANGUAGES.items()}
_ISO3 = {nllb.split("_")[0]: code for code, (_name, nllb) in LANGUAGES.items()}  # deu -> de, as NLLB spells it
# A language with a region or script (de-DE, pt_BR, zh-Hant-TW), or a locale as $LANG spells it (de_DE.UTF-8).
_REGIONAL = re.compile(r"^([A-Za-z]{2,3})((?:[-_][A-Za-z0-9]{2,8})+)$")
_LOCALE_TAIL = re.compile(r"^([A-Za-z]{2,3}_[A-Za-z]{2})[.@][\w.@-]*$")
_TRADITIONAL_CHINESE = {"zh_hant", "zh_tw", "zh_hk", "zh_mo", "zh_hant_tw", "zh_hant_hk"}
_NLLB_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
_MARIAN_NAME = re.compile(r"opus-mt-(?:tc-big-|tc-base-)?([A-Za-z_]+)-([A-Za-z_]+)")
_T5_TASK = re.compile(r"^translation_([a-z]+)_to_([a-z]+)$")
NEEDS_SOURCE = "needs the source language: add --from, e.g. --from en"


@dataclass(frozen=True)
class Route:
    """How one model translates one pair: what goes before each text, and how decoding starts."""

    family: str  # causal-lm, nllb, m2m100, marian, t5
    source: str | None  # the user's codes
    target: str
    prefix: str = ""  # T5 task prefix, or Marian's >>xx<< target token
    src_lang: str | None = None  # the tokenizer's src_lang (NLLB, M2M100)
    forced_bos_token_id: int | None = None  # the target-language token decoding must start with
    note: str | None = None  # a warning for the caller (the pair could not be checked)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def generate_kwargs(self) -> dict:
        return {} if self.forced_bos_token_id is None else {"forced_bos_token_id": self.forced_bos_token_id}


def normalize(code: str, option: str) -> str:
    """A user's language: ISO 639-1 lower-cased, an English name or a three-letter code (deu) turned
    into its ISO 639-1 code, a locale's encoding dropped (de_DE.UTF-8 -> de_DE), else as given."""
    text = code.strip()
    if not text:
        raise UsageError(f"{option} is empty; give a language code such as de, fr or zh")
    locale = _LOCALE_TAIL.match(text)
    if locale:
        text = locale.group(1)
    lower = text.lower()
    if lower in LANGUAGES:
        return lower
    return _NAMES.get(lower) or _ISO3.get(lower) or text


def base_language(code: str) -> str | None:
    """The ISO 639-1 language of a regional code (de for de-DE, pt for pt_BR); None for any other code."""
    match = _REGIONAL.match(code)
    if match and match.group(1).lower() in LANGUAGES:
        return match.group(1).lower()
    return None


def check_pair(target: str, source: str | None) -> None:
    """What can be checked before a model loads: --to (and --from) given, and not the same language.

    Raises:
        UsageError: an empty code, or --from and --to naming one language.
    """
    target_code = normalize(target, "--to")
    if source is None:
        return
    source_code = normalize(source, "--from")
    if _comparable(source_code) == _comparable(target_code):
        raise UsageError(f"--from {source} and --to {target} are the same language, so there is nothing to "
                         f"translate; give the language to translate into with --to")


def _comparable(code: str) -> str:
    # en and eng_Latn, pt-BR and pt_br name the same language; de-DE and de-AT do not.
    return (LANGUAGES[code][1] if code in LANGUAGES else code).replace("-", "_").lower()


def language_name(code: str) -> str:
    """English name of a code, for a causal LM's prompt: German; Portuguese (BR) for pt-BR."""
    if code in LANGUAGES:
        return LANGUAGES[code][0]
    base = base_language(code)
    if base is not None:
        return f"{LANGUAGES[base][0]} ({code[len(base) + 1:]})"
    raise InputError(f"unknown language code {code!r}; use an ISO 639-1 code such as "
                     f"{', '.join(sorted(LANGUAGES)[:12])} ... (one of {len(LANGUAGES)} known), "
                     f"optionally with a region (pt-BR)")


def plan_route(lm, target: str, source: str | None) -> Route:
    """The route for translating ``source`` (None: unknown) to ``target`` on ``lm``.

    Raises:
        InputError: the model cannot translate this pair (the message lists what it can),
            or needs --from and none was given, or is not a translation model.
    """
    from gptcli.models.kinds import CAUSAL_LM

    target = normalize(target, "--to")
    source = normalize(source, "--from") if source is not None else None
    if lm.kind == CAUSAL_LM:
        language_name(target)  # checks the codes, since the prompt names the languages
        if source is not None:
            language_name(source)
        return Route(CAUSAL_LM, source, target)
    for family, planner in _PLANNERS:
        if family(lm):
            return _plan_with_fallback(lm, planner, target, source)
    model_type = getattr(lm.model.config, "model_type", "?")
    raise InputError(f"{lm.name} ({model_type}) is not a translation model; use a Marian (opus-mt-*), "
                     f"NLLB, M2M100 or T5 model, or a causal LM")


def _plan_with_fallback(lm, planner, target: str, source: str | None) -> Route:
    """The model's own code for de-DE if it has one (NLLB zho_Hant, Marian >>pt_br<<), else its base: de."""
    try:
        return planner(lm, target, source)
    except InputError:
        base_target, base_source = base_language(target), base_language(source) if source else None
        if base_target is None and base_source is None:
            raise
    used_target, used_source = base_target or target, base_source or source
    route = planner(lm, used_target, used_source)  # its error, if any, names the base code it tried
    mapped = [(given, used) for given, used in ((source, used_source), (target, used_target)) if given != used]
    note = (f"{lm.name} has no code for {' or '.join(given for given, _used in mapped)}: translating "
            + ", ".join(f"{given} as {used}" for given, used in mapped))
    return replace(route, note=f"{route.note}; {note}" if route.note else note)


# ---------------------------------------------------------------- NLLB and M2M100


def _is_nllb(lm) -> bool:
    tokenizer = lm.tokenizer
    return tokenizer.convert_tokens_to_ids("eng_Latn") not in (None, tokenizer.unk_token_id)


def _nllb_route(lm, target: str, source: str | None) -> Route:
    codes = sorted(token for token in lm.tokenizer.get_vocab() if _NLLB_CODE.match(token))
    if source is None:
        raise InputError(f"{lm.name} (NLLB) {NEEDS_SOURCE}")
    native_src, native_tgt = (_nllb_native(code, codes, lm, option)
                              for code, option in ((source, "--from"), (target, "--to")))
    return Route("nllb", source, target, src_lang=native_src,
                 forced_bos_token_id=lm.tokenizer.convert_tokens_to_ids(native_tgt))


def _nllb_native(code: str, codes: list[str], lm, option: str) -> str:
    if code in codes:
        return code
    if code in LANGUAGES and LANGUAGES[code][1] in codes:
        return LANGUAGES[code][1]
    if code.replace("-", "_").lower() in _TRADITIONAL_CHINESE and "zho_Hant" in codes:
        return "zho_Hant"  # zh-TW falling back to plain zh would give the other script
    iso = sorted(c for c, (_name, nllb) in LANGUAGES.items() if nllb in codes)
    raise InputError(f"{option} {code}: {lm.name} (NLLB) does not know it; it supports {', '.join(iso)} "
                     f"and its own codes such as {', '.join(codes[:3])} ({len(codes)} in all)")


def _is_m2m100(lm) -> bool:
    return hasattr(lm.tokenizer, "lang_code_to_id") and hasattr(lm.tokenizer, "get_lang_id")


def _m2m100_route(lm, target: str, source: str | None) -> Route:
    codes = sorted(lm.tokenizer.lang_code_to_id)
    if source is None:
        raise InputError(f"{lm.name} (M2M100) {NEEDS_SOURCE}")
    for code, option in ((source, "--from"), (target, "--to")):
        if code not in codes:
            raise InputError(f"{option} {code}: {lm.name} (M2M100) supports {', '.join(codes)}")
    return Route("m2m100", source, target, src_lang=source, forced_bos_token_id=lm.tokenizer.get_lang_id(target))


# ---------------------------------------------------------------- Marian


def _is_marian(lm) -> bool:
    return getattr(lm.model.config, "model_type", "") == "marian"


def marian_pair(lm) -> tuple[str | None, str | None]:
    """The (source, target) a Marian model names: from its tokenizer, else its name (opus-mt-en-de)."""
    tokenizer = lm.tokenizer
    source, target = getattr(tokenizer, "source_lang", None), getattr(tokenizer, "target_lang", None)
    if source and target:
        return str(source), str(target)
    for name in (getattr(lm.model.config, "_name_or_path", "") or "", lm.name or ""):
        match = _MARIAN_NAME.search(name)
        if match:
            return match.group(1), match.group(2)
    return None, None


def _marian_route(lm, target: str, source: str | None) -> Route:
    pair_src, pair_tgt = marian_pair(lm)
    if source is not None and pair_src and _is_single(pair_src) and not _same(source, pair_src):
        raise InputError(f"--from {source}: {lm.name} translates from {pair_src} only "
                         f"({pair_src}→{pair_tgt}); {_other_model(source, target)}")
    tokens = list(getattr(lm.tokenizer, "supported_language_codes", None) or [])
    if tokens:  # a multi-target model: the target is chosen by a >>xx<< token before the text
        return Route("marian", source, target, prefix=_marian_target_token(lm, target, tokens) + " ")
    if pair_tgt is None:
        return Route("marian", source, target, note=f"{lm.name} does not say which languages it translates; "
                                                      f"assuming {source or '?'}→{target}")
    if not _same(target, pair_tgt):
        raise InputError(f"--to {target}: {lm.name} translates {pair_src or '?'}→{pair_tgt} only; "
                         f"{_other_model(source or pair_src, target)}")
    return Route("marian", source, target)


def _other_model(source: str | None, target: str) -> str:
    # Only a hub search says whether Helsinki-NLP/opus-mt-xx-yy exists: name the pattern, not a model.
    pair = f"{source}-{target}" if source and _is_single(source) else f"SOURCE-{target}"
    return (f"use a Marian model for your pair if the hub has one (Helsinki-NLP/opus-mt-{pair}), "
            f"or an NLLB model, which translates between 200 languages")


def _marian_target_token(lm, target: str, tokens: list[str]) -> str:
    wanted = {f">>{target}<<".replace("-", "_").lower()}  # pt-BR finds >>pt_br<<
    if target in LANGUAGES:
        wanted.add(f">>{LANGUAGES[target][1].split('_')[0]}<<")
    for token in tokens:
        if token.lower() in wanted:
            return token
    shown = ", ".join(t[2:-2] for t in tokens)
    raise InputError(f"--to {target}: {lm.name} translates into {shown}")


def _is_single(code: str) -> bool:
    # Group names (ROMANCE, mul, gmq, zle ...) cover many languages; a pair code is 2-3 lowercase letters.
    return bool(re.fullmatch(r"[a-z]{2,3}", code)) and code != "mul"


def _same(code: str, model_code: str) -> bool:
    if code == model_code:
        return True
    return code in LANGUAGES and LANGUAGES[code][1].split("_")[0] == model_code


# ---------------------------------------------------------------- T5


def _is_t5(lm) -> bool:
    return getattr(lm.model.config, "model_type", "") in ("t5", "mt5", "umt5")


def _t5_route(lm, target: str, source: str | None) -> Route:
    tasks = getattr(lm.model.config, "task_specific_params", None) or {}
    pairs = {(m.group(1), m.group(2)): spec.get("prefix", "") for key, spec in tasks.items()
             if (m := _T5_TASK.match(key)) and isinstance(spec, dict)}
    if not pairs:  # instruction-tuned T5s (flan-t5) take any pair named in the prefix
        if source is None:
            raise InputError(f"{lm.name} (T5) {NEEDS_SOURCE}: its prompt names both languages")
        return Route("t5", source, target, prefix=f"translate {language_name(source)} to {language_name(target)}: ")
    sources = {s for s, _t in pairs}
    if source is None and len(sources) == 1:
        source = next(iter(sources))
    if source is None:
        raise InputError(f"{lm.name} (T5) {NEEDS_SOURCE}")
    if (source, target) not in pairs:
        shown = ", ".join(f"{s}→{t}" for s, t in sorted(pairs))
        raise InputError(f"{lm.name} (T5) cannot translate {source}→{target}; it supports {shown}")
    return Route("t5", source, target, prefix=pairs[(source, target)])


# Checked in this order: NLLB models are M2M100 models with NLLB's tokenizer.
_PLANNERS = ((_is_nllb, _nllb_route), (_is_m2m100, _m2m100_route), (_is_marian, _marian_route),
             (_is_t5, _t5_route))
