"""Quality metrics over predictions and references: pure functions, no I/O, no model.

Classification: accuracy, macro-F1, per-label precision/recall/F1/support and the
confusion matrix. Summaries: ROUGE-1/2/L F-measure (the rouge-score package, Porter
stemming). Translations: chrF and BLEU (sacrebleu, with the signature that says how
they were computed). Language modelling: perplexity from the mean token loss.
`gptcli eval` and the finetune report share these, so a figure means the same everywhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class LabelScores:
    precision: float
    recall: float
    f1: float
    support: int  # how many references hold this label


@dataclass(frozen=True)
class ClassificationReport:
    """``confusion[i][j]``: references of ``labels[i]`` predicted as ``labels[j]``."""

    count: int
    accuracy: float
    macro_f1: float
    labels: tuple[str, ...]
    per_label: dict[str, LabelScores]
    confusion: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict:
        return {"count": self.count, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "per_label": {name: asdict(scores) for name, scores in self.per_label.items()},
                "confusion": {"labels": list(self.labels), "matrix": [list(row) for row in self.confusion]}}


def classification_report(references: Sequence[str], predictions: Sequence[str],
                          labels: Sequence[str]) -> ClassificationReport:
    """Accuracy, macro-F1, per-label scores and the confusion matrix.

    Args:
        references: the expected label of each record.
        predictions: the predicted label of each record, in the same order.
        labels: every label that may occur, in the order of the table and the matrix.

    Returns:
        The report. A label that is never predicted has precision 0 (and one never expected
        recall 0), as scikit-learn's zero_division=0 gives. Macro-F1 averages the labels that
        occur among the references or predictions: a label in ``labels`` that neither holds
        has no F1 to average.

    Raises:
        ValueError: no records, lengths that differ, or a label outside ``labels``.
    """
    _check_pairs(references, predictions)
    index = {label: position for position, label in enumerate(labels)}
    outside = next((label for label in (*references, *predictions) if label not in index), None)
    if outside is not None:
        raise ValueError(f"the label {outside!r} is not among the labels {list(labels)}")
    matrix = [[0] * len(labels) for _ in labels]
    for expected, predicted in zip(references, predictions):
        matrix[index[expected]][index[predicted]] += 1
    per_label = {label: _label_scores(matrix, position) for position, label in enumerate(labels)}
    seen = {*references, *predictions}
    occurring = [label for label in labels if label in seen]
    correct = sum(matrix[i][i] for i in range(len(labels)))
    return ClassificationReport(len(references), correct / len(references),
                                sum(per_label[label].f1 for label in occurring) / len(occurring),
                                tuple(labels), per_label, tuple(tuple(row) for row in matrix))


def _label_scores(matrix: list[list[int]], position: int) -> LabelScores:
    true_positive = matrix[position][position]
    predicted = sum(row[position] for row in matrix)
    support = sum(matrix[position])
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return LabelScores(precision, recall, f1, support)


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures (0 to 1), one summary against one reference each.

    rouge-score's own tokenizer (lower case, letters and digits only) with its Porter
    stemmer, as the papers that report ROUGE on news summaries use it.

    Raises:
        ValueError: no records, or lengths that differ.
    """
    from rouge_score import rouge_scorer

    _check_pairs(references, predictions)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # (target, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: total / len(predictions) for name, total in totals.items()}


@dataclass(frozen=True)
class CorpusScore:
    """A sacrebleu corpus score (0 to 100) with its signature, which says how to reproduce it."""

    score: float
    signature: str


def chrf(predictions: Sequence[str], references: Sequence[str]) -> CorpusScore:
    """Corpus chrF (sacrebleu's defaults: character 6-grams, beta 2), one reference per line.

    Raises:
        ValueError: no records, or lengths that differ.
    """
    from sacrebleu.metrics import CHRF

    _check_pairs(references, predictions)
    metric = CHRF()
    return CorpusScore(metric.corpus_score(list(predictions), [list(references)]).score, str(metric.get_signature()))


def bleu(predictions: Sequence[str], references: Sequence[str], tokenize: str | None = None) -> CorpusScore:
    """Corpus BLEU with sacrebleu's defaults (13a tokens, exponential smoothing), one reference per line.

    Args:
        tokenize: a sacrebleu tokenizer name, e.g. "zh" for Chinese; None: 13a.

    Raises:
        ValueError: no records, or lengths that differ.
    """
    from sacrebleu.metrics import BLEU

    _check_pairs(references, predictions)
    metric = BLEU(tokenize=tokenize)
    return CorpusScore(metric.corpus_score(list(predictions), [list(references)]).score, str(metric.get_signature()))


def bleu_tokenizer(target: str | None) -> str | None:
    """The BLEU tokenizer for a target language: sacrebleu's "zh" for Chinese, else its default (13a).

    Japanese and Korean have their own tokenizers in sacrebleu, but they need MeCab installed;
    chrF, which needs no word splitting, is the figure to read for them.
    """
    return "zh" if target and target.lower().split("-")[0] == "zh" else None


def mean_loss(losses: Sequence[float], tokens: Sequence[int]) -> float:
    """The mean loss per token over texts, each text's mean ``losses[i]`` weighted by its ``tokens[i]``.

    Raises:
        ValueError: no token at all.
    """
    total = sum(tokens)
    if total <= 0:
        raise ValueError("no token was scored")
    return sum(loss * count for loss, count in zip(losses, tokens) if count) / total


def perplexity(loss: float) -> float:
    """exp(mean token loss), in nats; inf when that overflows a float."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def _check_pairs(references: Sequence, predictions: Sequence) -> None:
    if len(references) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("no records to score")
