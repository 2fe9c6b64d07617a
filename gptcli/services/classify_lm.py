"""Zero-shot classification with a causal LM by scoring each label as the answer.

The prompt lists the labels and the text (through the chat template when the model
has one); each label is then scored as the continuation: the mean log-probability
of its tokens. Free text is never generated and parsed. A model's bare preference
for some label words is removed by subtracting the same score on texts about nothing
in particular (Zhao et al. 2021, "Calibrate before use", with everyday sentences in
place of "N/A": see neutral_texts), averaged over them.

With examples (few-shot), each one is a turn of its own before the text: the prompt
with the example's text, then the answer prefix and its label. They alternate between
labels, so no label is always the last one read; the calibration texts see the same
examples, so the calibration removes what the examples bias as well.
"""

from __future__ import annotations

from typing import Sequence

from gptcli.engine.backends import engine_for
from gptcli.errors import InputError, UsageError

DEFAULT_PROMPT = ("Classify the text into exactly one of these labels: {labels}.\n\n"
                  "Text: {text}\n\nAnswer with the label only.")
# The answer starts "Label:" (after the chat template's assistant turn, or the raw prompt):
# on SmolLM2 it lifted accuracy from 68% to 84% (sentiment) and 28% to 65% (topics), see docs/classify.md.
ANSWER_PREFIX = "Label:"
CONTENT_FREE = ("N/A", "", "[MASK]")  # an embedding model's multi-label zero point (classify_encoders)
# Zero-shot with the default prompt and one label per text, label scoring is mixed with noisy-channel
# scoring (Min et al. 2021): the text's log-probability after each label's CHANNEL_PROMPT. The two err on
# different texts: CHANNEL_WEIGHT of the channel's log-softmax and the rest of label scoring's, chosen on the
# public sets' train splits (benchmarks/results/classify_fewshot.txt, section 5: +1 to +9 points on four;
# held out, UCI reviews +9.7 and DBpedia +10.3). A log-softmax ranks labels against each other, so
# --multi-label (each label on its own, a sigmoid of its evidence) keeps label scoring alone.
CHANNEL_PROMPT = "This text is about {label}:"
CHANNEL_WEIGHT = 0.3


class LabelScorer:
    """Evidence per label: calibrated, length-normalised log-likelihood of the label as the answer."""

    temperature = 1.0  # evidence is in nats per token; softmax over it as it is

    def __init__(self, lm, labels: tuple[str, ...], params):
        self.lm = lm
        self.labels = labels
        self.rows_per_text = len(labels)
        self.batch_size = params.batch_size
        self.prompt = params.prompt or DEFAULT_PROMPT
        self.chat = bool(getattr(lm.tokenizer, "chat_template", None))
        self.answer_prefix = ANSWER_PREFIX if params.answer_prefix is None else params.answer_prefix
        self.label_ids = [self._label_ids(label) for label in labels]
        self.examples = interleave(params.examples, labels)
        neutral = self._calibration_prompts()
        # The prompt every text shares runs once; its last token is kept back (it may merge with the text).
        common = _common_prefix(neutral)
        self.prefix = engine_for(lm).prefix_scorer(common[:max(0, len(common) - 1)])
        calibrate = params.calibrate is not False  # on by default: see neutral_texts for what it gave
        self.bias = self._bias(neutral) if calibrate else [0.0] * len(labels)
        # A prompt or examples of the user's own are what they chose to classify by: label scoring alone.
        mixed = not (params.prompt or self.examples or params.multi_label)
        self.channel = ChannelScorer(lm, labels, params.batch_size) if mixed else None

    def evidence(self, texts: Sequence[str]) -> tuple[list[list[float]], list[int]]:
        evidence, tokens = self.label_evidence(texts)
        if self.channel is not None:
            evidence = [_mixed(row, channel) for row, channel in zip(evidence, self.channel.scores(texts))]
        return evidence, tokens

    def label_evidence(self, texts: Sequence[str]) -> tuple[list[list[float]], list[int]]:
        """Label scoring alone: each label's calibrated score as the answer, and each prompt's length."""
        prompts = [self.prompt_ids(text, f"text {text[:40]!r}") for text in texts]
        scores = self._score(prompts)
        return [[score - bias for score, bias in zip(row, self.bias)] for row in scores], [len(p) for p in prompts]

    def _calibration_prompts(self) -> list[list[int]]:
        """The neutral texts' prompts that fit the context (an empty text's alone when none does).

        The empty text is built first, checked: it is where labels or examples too many for the
        context are refused."""
        from gptcli.services.neutral_texts import NEUTRAL_TEXTS

        empty = self.prompt_ids("", "content-free input")
        longest = max(len(ids) for ids in self.label_ids)
        context = self.lm.context_length
        fitting = [ids for ids in (self.prompt_ids(text, "content-free input", check=False) for text in NEUTRAL_TEXTS)
                   if context is None or len(ids) + longest <= context]
        return fitting or [empty]

    def _bias(self, prompts: list[list[int]]) -> list[float]:
        rows = self._score(prompts)
        return [sum(column) / len(rows) for column in zip(*rows)]

    def prompt_ids(self, text: str, where: str, check: bool = True) -> list[int]:
        tokenizer = self.lm.tokenizer
        turns = [(self._content(example), label) for example, label in self.examples]
        if self.chat:
            from gptcli.services.prompting import render_chat

            messages = []
            for content, label in turns:
                messages += [{"role": "user", "content": content},
                             {"role": "assistant", "content": self._answer(label)}]
            messages.append({"role": "user", "content": self._content(text)})
            rendered = render_chat(tokenizer, messages, where)
            ids = tokenizer(rendered + self.answer_prefix, add_special_tokens=False)["input_ids"]
        else:
            shown = "".join(f"{content}\n{self._answer(label)}\n\n" for content, label in turns)
            ids = tokenizer(f"{shown}{self._content(text)}\n{self.answer_prefix}", add_special_tokens=True)["input_ids"]
        if check:
            self._check_length(len(ids), where)
        return list(ids)

    def _content(self, text: str) -> str:
        return self.prompt.format(labels=", ".join(self.labels), text=text)

    def _answer(self, label: str) -> str:
        return f"{self.answer_prefix}{self._spoken(label)}"

    def _spoken(self, label: str) -> str:
        # After "Label:" a word starts with a space; at the start of a chat answer it does not.
        spaced = self.answer_prefix and not self.answer_prefix.endswith((" ", "\n"))
        return f" {label}" if spaced else label

    def _label_ids(self, label: str) -> list[int]:
        ids = self.lm.tokenizer(self._spoken(label), add_special_tokens=False)["input_ids"]
        if not ids:
            raise InputError(f"the label {label!r} has no tokens for this model; use a word")
        return list(ids)

    def _check_length(self, prompt_tokens: int, where: str) -> None:
        context = self.lm.context_length
        longest = prompt_tokens + max(len(ids) for ids in self.label_ids)
        if context is not None and longest > context:
            if where == "content-free input" and self.examples:
                raise UsageError(f"the {len(self.examples)} examples take about {prompt_tokens:,} tokens of the "
                                 f"prompt, more than the model's context of {context} holds with a text; give "
                                 f"fewer or shorter examples")
            if where == "content-free input":  # no text yet: the listed labels alone do not fit
                raise UsageError(self._too_many_labels(longest, context))
            raise InputError(f"{where} needs {longest} tokens with its prompt and label, more than the "
                             f"model's context of {context}; shorten the text")

    def _too_many_labels(self, needed: int, context: int) -> str:
        listed = len(self.lm.tokenizer(", ".join(self.labels), add_special_tokens=False)["input_ids"])
        overhead = needed - listed  # the prompt's own tokens and the longest label as the answer
        if overhead >= context:
            fix = "shorten --prompt or use" if self.prompt is not DEFAULT_PROMPT else "use"
            return (f"the classification prompt needs {overhead:,} tokens before the labels and any text, more "
                    f"than the model's context of {context}; {fix} a model with a longer context")
        fits = int((context - overhead) / max(1.0, listed / len(self.labels)))
        room = f"at most about {fits:,} labels like these fit" if fits >= 2 else "not even two labels like these fit"
        return (f"the {len(self.labels):,} labels take {listed:,} tokens of the prompt, more than the model's "
                f"context of {context} tokens holds ({room}, before any text); give fewer labels, or use an "
                f"embedding or NLI model, which scores each label on its own")

    def _score(self, prompts: list[list[int]]) -> list[list[float]]:
        """Mean log-prob of each label after each prompt: rows text x label, batched."""
        rows = [(p, ids) for p in prompts for ids in self.label_ids]
        flat: list[float] = []
        for start in range(0, len(rows), self.batch_size):
            answers = self.prefix.answer_logprobs(rows[start:start + self.batch_size])
            flat.extend(sum(tokens) / len(tokens) for tokens in answers)
        width = len(self.labels)
        return [flat[i:i + width] for i in range(0, len(flat), width)]


class ChannelScorer:
    """Each label's CHANNEL_PROMPT, then the text: the text's summed log-probability after it (the text's
    own probability is the same under every label, so no calibration is needed)."""

    def __init__(self, lm, labels: tuple[str, ...], batch_size: int):
        self.tokenizer = lm.tokenizer
        self.batch_size = batch_size
        self.prompts = [list(self.tokenizer(CHANNEL_PROMPT.format(label=label))["input_ids"]) for label in labels]
        common = _common_prefix(self.prompts)
        self.prefix = engine_for(lm).prefix_scorer(common[:max(0, len(common) - 1)])

    def scores(self, texts: Sequence[str]) -> list[list[float]]:
        """Rows text x label: the text's log-probability after each label's prompt."""
        rows = []
        for text in texts:
            ids = list(self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"])
            rows += [(prompt, ids) for prompt in self.prompts]
        flat: list[float] = []
        for start in range(0, len(rows), self.batch_size):
            flat.extend(sum(tokens) for tokens in self.prefix.answer_logprobs(rows[start:start + self.batch_size]))
        width = len(self.prompts)
        return [flat[i:i + width] for i in range(0, len(flat), width)]


def _mixed(labelled: list[float], channel: list[float]) -> list[float]:
    """Label scoring's and the channel's log-softmaxes, weighted (CHANNEL_WEIGHT)."""
    return [(1 - CHANNEL_WEIGHT) * a + CHANNEL_WEIGHT * b
            for a, b in zip(_log_softmax(labelled), _log_softmax(channel))]


def _log_softmax(values: list[float]) -> list[float]:
    import math

    top = max(values)
    total = top + math.log(sum(math.exp(value - top) for value in values))
    return [value - total for value in values]


def interleave(examples, labels: tuple[str, ...]) -> list[tuple[str, str]]:
    """The examples taken one label at a time in turn (each label's own in file order)."""
    queues = {label: [pair for pair in examples if pair[1] == label] for label in labels}
    ordered: list[tuple[str, str]] = []
    while any(queues.values()):
        for label in labels:
            if queues[label]:
                ordered.append(queues[label].pop(0))
    return ordered


def _common_prefix(samples: list[list[int]]) -> list[int]:
    first = samples[0]
    length = len(first)
    for other in samples[1:]:
        length = next((i for i, (a, b) in enumerate(zip(first, other)) if a != b), min(length, len(other)))
    return first[:length]
