"""Classification with encoder models: a classifier's own head, NLI zero-shot, and embeddings."""

from __future__ import annotations

from typing import Sequence

from gptcli.engine.encoders import EncoderEngine
from gptcli.errors import InputError, UsageError

# Chosen by benchmarks/classify_accuracy.py on the packaged all-MiniLM-L6-v2 (docs/classify.md).
DEFAULT_LABEL_TEMPLATE = "This text is about {}."
EMBEDDING_TEMPERATURE = 0.05  # cosine similarities of different labels differ by a few hundredths
# With --examples, a label's vector is this much its description and the rest its examples' centroid.
# Measured on the train splits, 4 and 8 examples per label, rows not used as examples
# (benchmarks/results/classify_fewshot.txt): 0.7-0.8 best on three sets; 1.0 ignores the examples.
DESCRIPTION_WEIGHT = 0.75


def is_nli(config) -> bool:
    """An NLI model: its labels include entailment (and usually contradiction)."""
    names = [str(name).lower() for name in (getattr(config, "id2label", None) or {}).values()]
    return any(name.startswith("entail") for name in names)


def _label_index(config, prefix: str) -> int | None:
    for index, name in sorted((int(i), str(n).lower()) for i, n in config.id2label.items()):
        if name.startswith(prefix):
            return index
    return None


def _encode(lm, texts: Sequence[str], pairs: Sequence[str] | None = None):
    """Tokenize a batch (padded), refusing texts longer than the model's context."""
    tokenizer = lm.tokenizer
    batch = tokenizer(list(texts), list(pairs) if pairs is not None else None, padding=True,
                      return_tensors="pt")
    context = lm.context_length
    lengths = batch["attention_mask"].sum(-1).tolist()
    for text, length in zip(texts, lengths):
        if context is not None and length > context:
            raise InputError(f"text {text[:40]!r} is {length} tokens, more than the model's context of "
                             f"{context}; shorten it")
    return batch.to(lm.device), lengths


class HeadScorer:
    """A fine-tuned classifier: its own labels, its logits as evidence."""

    temperature = 1.0

    def __init__(self, lm, params):
        config = lm.model.config
        if params.labels:
            raise UsageError(f"{lm.name} is a classifier with its own labels "
                             f"({', '.join(self._names(config))}); drop --labels (only NLI models take them)")
        self.lm = lm
        self.labels = self._names(config)
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"

    @staticmethod
    def _names(config) -> tuple[str, ...]:
        return tuple(str(config.id2label[i]) for i in sorted(config.id2label, key=int))

    def evidence(self, texts: Sequence[str]):
        batch, lengths = _encode(self.lm, texts)
        return EncoderEngine(self.lm).logits(batch).tolist(), lengths


class NliScorer:
    """Zero-shot with an NLI model: does the text entail "This example is {label}."?

    Evidence is the entailment logit minus the contradiction logit, so one label's
    sigmoid is its entailment probability against contradiction (multi-label), and a
    softmax across labels ranks them (single label).
    """

    temperature = 1.0

    def __init__(self, lm, labels: tuple[str, ...], params):
        config = lm.model.config
        self.lm = lm
        self.labels = labels
        self.rows_per_text = len(labels)
        self.hypotheses = [params.hypothesis_template.format(label) for label in labels]
        self.entail = _label_index(config, "entail")
        self.contradict = _label_index(config, "contradict")

    def evidence(self, texts: Sequence[str]):
        premises = [text for text in texts for _ in self.hypotheses]
        batch, lengths = _encode(self.lm, premises, self.hypotheses * len(texts))
        logits = EncoderEngine(self.lm).logits(batch)
        against = logits[:, self.contradict] if self.contradict is not None else 0.0
        values = (logits[:, self.entail] - against).view(len(texts), len(self.labels))
        width = len(self.labels)
        return values.tolist(), [sum(lengths[i:i + width]) for i in range(0, len(lengths), width)]


class EmbeddingScorer:
    """Zero-shot with a sentence-embedding model: cosine similarity to each label's description.

    Embeddings are pooled as the model's config asks (mean over real tokens without one) and
    normalised (services.embed).
    When calibrating (by default only for multi-label), evidence is the similarity
    minus the label's similarity to content-free inputs, so a description that is
    close to everything gains nothing.

    With examples (few-shot), every vector is first centred on the examples' mean (what all
    the user's texts share says nothing about their labels), and each label's vector blends
    its description with the centroid of its examples (``DESCRIPTION_WEIGHT``); a label
    without examples keeps its description alone.
    """

    temperature = EMBEDDING_TEMPERATURE

    def __init__(self, lm, labels: tuple[str, ...], params):
        from gptcli.services.classify_lm import CONTENT_FREE

        self.lm = lm
        self.labels = labels
        self.batch_size = params.batch_size
        template = params.label_template or DEFAULT_LABEL_TEMPLATE
        self.label_vectors = self._embed([template.format(label) for label in labels])[0]
        self.bias = None
        self.centre = None
        if params.examples:
            self._blend_examples(params.examples)
        # Single-label softmax gained nothing from calibration here (docs/classify.md), but
        # multi-label needs a zero point: "closer than content-free text is".
        if params.calibrate or (params.calibrate is None and params.multi_label):
            self.bias = self._similarity(self._embed(list(CONTENT_FREE))[0]).mean(0)

    def _blend_examples(self, examples: Sequence[tuple[str, str]]) -> None:
        import torch

        normalize = torch.nn.functional.normalize
        vectors = self._embed([text for text, _label in examples])[0]
        self.centre = vectors.mean(0)
        described = normalize(self.label_vectors - self.label_vectors.mean(0), dim=-1)
        blended = []
        for index, label in enumerate(self.labels):
            own = [row for row, (_text, name) in enumerate(examples) if name == label]
            if not own:
                blended.append(described[index])
                continue
            centroid = normalize((vectors[own] - self.centre).mean(0), dim=-1)
            blended.append(DESCRIPTION_WEIGHT * described[index] + (1 - DESCRIPTION_WEIGHT) * centroid)
        self.label_vectors = normalize(torch.stack(blended), dim=-1)

    def evidence(self, texts: Sequence[str]):
        vectors, lengths = self._embed(texts)
        similarity = self._similarity(vectors)
        if self.bias is not None:
            similarity = similarity - self.bias
        return similarity.tolist(), lengths

    def _similarity(self, vectors):
        import torch

        if self.centre is not None:
            vectors = torch.nn.functional.normalize(vectors - self.centre, dim=-1)
        return vectors @ self.label_vectors.T

    def _embed(self, texts: Sequence[str]):
        return embed(self.lm, texts, self.batch_size)


def embed(lm, texts: Sequence[str], batch_size: int):
    """Unit-length sentence vectors of ``texts`` (a tensor, rows in order) and their token counts,
    pooled as the model's config asks (services.embed); always unit length, for cosine similarity.

    Raises:
        InputError: a text longer than the model's context.
    """
    from gptcli.services.embed import EmbedParams
    from gptcli.services.embed import embed as embed_texts

    return embed_texts(lm, texts, EmbedParams(batch_size, normalize=True, full_context=True))
