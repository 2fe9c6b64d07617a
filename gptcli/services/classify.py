"""Classify texts into labels with any kind of model: streamed, batched, in input order.

Each model kind has a scorer (``classify_lm`` for causal LMs, ``classify_encoders``
for sequence classifiers, NLI models and embedding models). A scorer turns a batch
of texts into one *evidence* value per label, where 0 means "no evidence either
way"; this module turns evidence into scores (softmax for one label per text,
sigmoid for ``multi_label``) and picks the labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Protocol, Sequence

from gptcli.errors import InputError, UsageError
from gptcli.services.records import ItemResult

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class ClassifyParams:
    """How to classify. Empty ``labels``: a sequence classifier's own labels.

    ``batch_size`` counts sequences per forward pass (a causal LM or NLI model runs
    one sequence per text and label). The templates are for the kinds that use them:
    ``prompt`` (causal LM, with ``{labels}`` and ``{text}``), ``hypothesis_template``
    (NLI) and ``label_template`` (embedding), each with ``{}`` for the label.
    ``examples`` are labelled texts: a causal LM reads them in its prompt, an embedding
    model blends them into its label vectors; other kinds refuse them.
    """

    labels: tuple[str, ...] = ()
    multi_label: bool = False
    threshold: float = DEFAULT_THRESHOLD
    batch_size: int = 16
    calibrate: bool | None = None  # None: each kind's measured default (see the scorers)
    prompt: str | None = None
    answer_prefix: str | None = None
    hypothesis_template: str = "This example is {}."
    label_template: str | None = None
    temperature: float | None = None  # None: the scorer's own (see each scorer)
    examples: tuple[tuple[str, str], ...] = ()  # few-shot (text, label) pairs, each label one of ``labels``

    @property
    def row_tokens(self) -> int:
        """The tokens one batch row is sized for when the batch size is chosen from free memory."""
        return 256


@dataclass
class Classification:
    """The result for input ``index``: every label's score and the labels chosen."""

    index: int
    labels: tuple[str, ...]
    scores: dict[str, float]
    multi_label: bool = False
    tokens: int = 0

    @property
    def label(self) -> str | None:
        """The best label (single-label), or the first chosen one; None when none passed."""
        return self.labels[0] if self.labels else None

    def to_dict(self) -> dict:
        result: dict = {"label": self.label}
        if self.multi_label:
            result["labels"] = list(self.labels)
        result["scores"] = {name: round(score, 6) for name, score in self.scores.items()}
        return result


class Scorer(Protocol):
    """What every kind's scorer offers."""

    labels: tuple[str, ...]
    temperature: float

    def evidence(self, texts: Sequence[str]) -> tuple[list[list[float]], list[int]]:
        """Per text, one evidence value per label; and the tokens each text used."""


@dataclass
class ClassifyStats:
    """Filled in while classifying, for --stats."""

    texts: int = 0
    tokens: int = 0
    sequences: int = field(default=0)


def check_labels(labels: Sequence[str], where: str = "--labels") -> tuple[str, ...]:
    """Labels stripped and checked: none blank, none repeated, at least two (one for multi-label).

    Raises:
        UsageError: naming the problem and the fix.
    """
    cleaned = tuple(label.strip() for label in labels)
    if not any(cleaned):
        raise UsageError(f"{where} is empty; give labels such as --labels positive,negative")
    if any(not label for label in cleaned):
        raise UsageError(f"{where} has a blank label; remove the empty item (e.g. a doubled or trailing comma)")
    seen: set[str] = set()
    for label in cleaned:
        if label.casefold() in seen:
            raise UsageError(f"{where} repeats the label {label!r}; give each label once")
        seen.add(label.casefold())
    return cleaned


def check_params(params: ClassifyParams) -> None:
    """Option values that make no sense whatever the model.

    Raises:
        UsageError: a threshold outside (0, 1), a single label without ``multi_label``, a template
            with a placeholder other than its own (or stray braces), a bad batch size or temperature.
    """
    if not 0.0 < params.threshold < 1.0:  # also refuses nan
        raise UsageError(f"--threshold must be between 0 and 1 (exclusive), got {params.threshold}")
    if params.batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {params.batch_size}")
    if params.temperature is not None and not 0.0 < params.temperature < math.inf:
        raise UsageError(f"the temperature must be a number above 0, got {params.temperature}")
    if len(params.labels) == 1 and not params.multi_label:
        raise UsageError(f"one label ({params.labels[0]!r}) leaves nothing to choose between; give two or more, "
                         f"or add --multi-label to score a single label on its own")
    check_label_template(params.hypothesis_template, "--hypothesis-template", "This example is {}.")
    if params.label_template is not None:
        check_label_template(params.label_template, "--label-template", "This text is about {}.")
    if params.prompt is not None:
        check_prompt_template(params.prompt)
    unknown = next((label for _text, label in params.examples if label not in params.labels), None)
    if unknown is not None:
        raise UsageError(f"the example label {unknown!r} is not one of the labels ({', '.join(params.labels)}); "
                         f"fix it or add it to --labels")


BRACES = "write {{ and }} for a literal brace"


def check_label_template(template: str, option: str, example: str) -> None:
    """A template with exactly one ``{}``, where the label goes.

    Raises:
        UsageError: naming ``option``: another placeholder, stray braces, no ``{}`` or two.
    """
    names = _placeholders(template, option, "{}")
    if names != [""]:
        found = f"it has {', '.join('{' + name + '}' for name in names)}" if names else "it has no placeholder"
        raise UsageError(f"{option} {template!r} must hold exactly one {{}} where the label goes and no other "
                         f"placeholder ({found}); {BRACES}, e.g. {example!r}")


def check_prompt_template(template: str) -> None:
    """A causal LM's prompt: ``{text}`` once or more, ``{labels}`` if wanted, no other placeholder.

    Raises:
        UsageError: naming --prompt and the placeholder that is not allowed.
    """
    names = _placeholders(template, "--prompt", "{text} and {labels}")
    other = next((name for name in names if name not in ("text", "labels")), None)
    if other is not None:
        raise UsageError(f"--prompt has {{{other}}}; only {{text}} and {{labels}} are filled in ({BRACES})")
    if "text" not in names:
        raise UsageError("--prompt needs {text} where the text goes (and may use {labels})")


def _placeholders(template: str, option: str, allowed: str) -> list[str]:
    """The names inside braces, as str.format reads them; format specs and !conversions refused."""
    import string

    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # a lone { or }, or a { never closed
        raise UsageError(f"{option} {template!r}: {str(exc).lower()}; only {allowed} may stand in braces "
                         f"({BRACES})") from None
    names = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise UsageError(f"{option} has {written}; only a plain {allowed} may stand in braces ({BRACES})")
        names.append(name)
    return names


def classify(lm, texts: Sequence[str], params: ClassifyParams,
             stats: ClassifyStats | None = None, start: int = 0) -> Iterator[Classification]:
    """Classify ``texts`` with a loaded model of any supported kind; yield results in order.

    Args:
        lm: a LoadedModel (causal LM, sequence classifier or embedding model).
        texts: non-empty texts.
        params: labels, multi-label policy and templates.
        stats: filled in as batches finish, when given.
        start: how many texts of the same run came before these (a server gets a run in parts):
            errors number the texts from there.

    Raises:
        UsageError: labels missing or not allowed for this model.
        InputError: an empty text, or one longer than the model's context.
    """
    from gptcli.services.prompting import MAX_CHARS_PER_TOKEN

    check_params(params)
    limit = lm.context_length * MAX_CHARS_PER_TOKEN if lm.context_length else None
    for index, text in enumerate(texts):
        if not text.strip():
            raise InputError(f"text {start + index + 1} is empty; every text to classify needs some words")
        if limit is not None and len(text) > limit:  # refused before a slow tokenization of it
            raise InputError(f"text {start + index + 1} is {len(text):,} characters, far more than the model's context "
                             f"of {lm.context_length} tokens; shorten it")
    scorer = make_scorer(lm, params)
    multi = params.multi_label or getattr(scorer, "multi_label", False)
    step = max(1, params.batch_size // getattr(scorer, "rows_per_text", 1))
    for start in range(0, len(texts), step):
        batch = texts[start:start + step]
        evidence, tokens = scorer.evidence(batch)
        for offset, (row, used) in enumerate(zip(evidence, tokens)):
            if stats is not None:
                stats.texts += 1
                stats.tokens += used
            yield _decide(start + offset, scorer, row, multi, params, used)


RESULT_FIELDS = ("label", "scores")  # what a result's record gets (and "labels" when multi-label)


def classification_results(lm, texts: Sequence[str], params: ClassifyParams, stats: ClassifyStats | None = None,
                           start: int = 0) -> Iterator[ItemResult]:
    """Each text's result as `gptcli classify` writes it, locally and through a server.

    Args:
        lm, params, stats: as ``classify``.
        texts: the texts; an empty one (a blank stdin line) gets a blank result, no label and no
            scores, so the output lines stay aligned with the input's.
        start: how many non-empty texts of the same run came before these (see ``classify``).

    Returns:
        An iterator of ItemResults in input order (fields label, scores, and labels when multi-label).

    Raises:
        UsageError, InputError: as ``classify``.
    """
    results = classify(lm, [text for text in texts if text], params, stats, start)
    for text in texts:
        if text:
            yield ItemResult(next(results).to_dict())
        else:
            yield ItemResult({"label": None, **({"labels": []} if params.multi_label else {}), "scores": {}})


def make_scorer(lm, params: ClassifyParams) -> Scorer:
    """The scorer for the loaded model's kind."""
    from gptcli.models import kinds

    if lm.kind == kinds.CAUSAL_LM:
        from gptcli.services.classify_lm import LabelScorer

        return LabelScorer(lm, _needed(params, lm), params)
    from gptcli.services import classify_encoders as enc

    if lm.kind == kinds.SEQUENCE_CLASSIFIER:
        if params.examples:
            raise UsageError(f"--examples works with causal LMs and embedding models, not with a sequence "
                             f"classifier such as {lm.name}; drop --examples or use another --model")
        if enc.is_nli(lm.model.config):
            return enc.NliScorer(lm, _needed(params, lm), params)
        return enc.HeadScorer(lm, params)
    if lm.kind == kinds.EMBEDDING:
        return enc.EmbeddingScorer(lm, _needed(params, lm), params)
    raise UsageError(f"{lm.name} is {kinds.KIND_NAMES.get(lm.kind, lm.kind)}; classify needs a causal LM, "
                     f"a sequence classifier (or NLI model) or an embedding model")


def _needed(params: ClassifyParams, lm) -> tuple[str, ...]:
    if not params.labels:
        raise UsageError(f"{lm.name} has no labels of its own; give them with --labels a,b,c or --labels-file")
    return params.labels


def _decide(index: int, scorer: Scorer, row: list[float], multi: bool, params: ClassifyParams,
            tokens: int) -> Classification:
    temperature = params.temperature or scorer.temperature
    scaled = [value / temperature for value in row]
    if multi:
        probabilities = [_sigmoid(value) for value in scaled]
        chosen = sorted((p, i) for i, p in enumerate(probabilities) if p >= params.threshold)
        picked = tuple(scorer.labels[i] for _p, i in reversed(chosen))
    else:
        probabilities = softmax(scaled)
        picked = (scorer.labels[max(range(len(row)), key=probabilities.__getitem__)],)
    scores = dict(zip(scorer.labels, probabilities))
    return Classification(index, picked, scores, multi, tokens)


def softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(value - top) for value in values]
    total = sum(exps)
    return [value / total for value in exps]


def _sigmoid(value: float) -> float:
    if value >= 0:
        return 1.0 / (1.0 + math.exp(-value))
    exp = math.exp(value)
    return exp / (1.0 + exp)
