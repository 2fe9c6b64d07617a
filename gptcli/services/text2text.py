"""Text in, text out, in batches: the model call shared by summarize and translate.

A causal LM gets each request as a chat message and runs through the one decode
loop in ``services.generate``; an encoder-decoder model runs ``model.generate``
(transformers 5 has no summarization/translation pipelines to do it for us).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from gptcli.services.prompting import Prompt, encode_prompt, fit_to_context


@dataclass(frozen=True)
class Request:
    """One model call: the text the model reads, and how many tokens it may write."""

    text: str
    max_new_tokens: int


FINISH_EOS, FINISH_LENGTH, FINISH_STOP = "eos", "length", "stop"


def _finish(reason: str) -> str:
    """generate's reasons as ours: "stop" (a stop string ended it) stays, all but "length" else is "eos"."""
    return reason if reason in (FINISH_LENGTH, FINISH_STOP) else FINISH_EOS


@dataclass
class Output:
    """What one call wrote; ``finish_reason`` "length" when it stopped at its token budget, not at EOS."""

    text: str
    input_tokens: int
    generated_tokens: int
    finish_reason: str = FINISH_EOS
    wrong_language: bool = False  # translate: the output failed the language check (services.langcheck)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunStats:
    """Filled in while running, for --stats."""

    calls: int = 0
    input_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    def add(self, outputs: list[Output], seconds: float) -> None:
        self.calls += len(outputs)
        self.input_tokens += sum(o.input_tokens for o in outputs)
        self.generated_tokens += sum(o.generated_tokens for o in outputs)
        self.seconds += seconds


@dataclass
class Runner:
    """Runs requests on one loaded model, ``batch_size`` at a time, results in request order.

    ``generate_kwargs`` go to seq2seq ``model.generate`` (e.g. ``forced_bos_token_id``).
    """

    lm: Any
    batch_size: int = 8
    generate_kwargs: dict = field(default_factory=dict)
    stats: RunStats = field(default_factory=RunStats)
    max_batch_tokens: int | None = None  # causal models: see GenerationParams
    stop: tuple[str, ...] = ()  # causal models: end a request's text at the first of these (not kept)
    sampling: Any = None  # causal models: a SamplingParams (repetition control); None: plain greedy

    @property
    def is_causal(self) -> bool:
        from gptcli.models.kinds import CAUSAL_LM

        return self.lm.kind == CAUSAL_LM

    @property
    def output_limit(self) -> int | None:
        """The most tokens one call can write: an encoder-decoder's decoder positions (None: no limit).

        Learned or fixed position tables (BART, Marian, Pegasus) fail with an IndexError past
        them; callers keep their budgets under this, and requests above it are capped.
        """
        if self.is_causal:
            return None  # the context is shared with the prompt: fit_to_context budgets it
        config = self.lm.model.config
        for attribute in ("max_target_positions", "max_decoder_position_embeddings", "max_position_embeddings"):
            value = getattr(config, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
        return None  # T5's relative positions have no end

    def encode(self, text: str) -> list[int]:
        """The token ids the model reads for ``text`` (chat template or special tokens included)."""
        if self.is_causal:
            return encode_prompt(self.lm.tokenizer, Prompt(text=text))
        return list(self.lm.tokenizer(text)["input_ids"])

    def run(self, requests: list[Request]) -> list[Output]:
        started = time.perf_counter()
        outputs = self._run_causal(requests) if self.is_causal else self._run_seq2seq(requests)
        self.stats.add(outputs, time.perf_counter() - started)
        return outputs

    def _run_causal(self, requests: list[Request]) -> list[Output]:
        from gptcli.services.generate import GenerationParams, generate

        fitted = [fit_to_context(self.encode(r.text), self.lm.context_length, r.max_new_tokens, None,
                                 "a request") for r in requests]
        from gptcli.engine.sampling import SamplingParams

        params = GenerationParams(sampling=self.sampling or SamplingParams(), stop=self.stop,
                                  batch_size=self.batch_size, max_batch_tokens=self.max_batch_tokens)
        return [Output(c.text.strip(), c.prompt_tokens, c.generated_tokens, _finish(c.finish_reason))
                for c in generate(self.lm, fitted, params)]

    def _run_seq2seq(self, requests: list[Request]) -> list[Output]:
        # Sorted by length so each batch pads little; put back in request order at the end.
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].text))
        results: dict[int, Output] = {}
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            for index, output in zip(batch, self._seq2seq_batch([requests[i] for i in batch])):
                results[index] = output
        return [results[i] for i in range(len(requests))]

    def _seq2seq_batch(self, requests: list[Request]) -> list[Output]:
        from gptcli.engine.seq2seq import Seq2SeqEngine

        tokenizer = self.lm.tokenizer
        budget = max(r.max_new_tokens for r in requests)
        if self.output_limit is not None:
            budget = min(budget, self.output_limit)
        out, encoded = Seq2SeqEngine(self.lm).generate(
            tokenizer([r.text for r in requests], return_tensors="pt", padding=True), budget, **self.generate_kwargs)
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        # Row 0 is the decoder start token; a forced target-language token follows it. Drop both by
        # position: transformers 5 does not always mark M2M100's language tokens as special.
        start = 1 + ("forced_bos_token_id" in self.generate_kwargs)
        texts = tokenizer.batch_decode(out[:, start:], skip_special_tokens=True)
        pad = tokenizer.pad_token_id
        generated = [int((row[1:] != pad).sum()) for row in out]
        ended = [self._ended(row[1:]) and not (self._forces_eos() and g >= budget) for row, g in zip(out, generated)]
        return [Output(text.strip(), int(n), g, FINISH_EOS if e else FINISH_LENGTH)
                for text, n, g, e in zip(texts, lengths, generated, ended)]

    def _forces_eos(self) -> bool:
        """Whether generate puts an EOS in the last place a row has (Marian and BART-cnn checkpoints set
        forced_eos_token_id): a row that used its whole budget then ends in an EOS it did not choose."""
        forced = self.generate_kwargs.get("forced_eos_token_id",
                                          getattr(self.lm.model.generation_config, "forced_eos_token_id", None))
        return forced is not None

    def _ended(self, row) -> bool:
        """Whether a generated row holds an end-of-sequence token (else it stopped at the budget)."""
        eos = self.lm.model.generation_config.eos_token_id
        if eos is None:
            eos = self.lm.tokenizer.eos_token_id
        eos_ids = set(eos) if isinstance(eos, (list, tuple)) else {eos}
        return bool(eos_ids & set(row.tolist()))
