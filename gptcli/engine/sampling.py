"""Sampling settings and the choice of the next token (the engine's sampler; services and commands read SamplingParams from here)."""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass, fields

from gptcli.errors import UsageError

# One documented range for --seed: torch takes 0..2**64-1 (and negatives, folded), numpy and
# llama.cpp 0..2**32-1; within this range a seed means the same thing on every backend.
MAX_SEED = 2**32 - 1
# Logits are divided by the temperature and positive ones by the repetition penalty: far below
# this, float32 logits overflow to inf and sampling has no distribution left to draw from.
# (Already at this value sampling is greedy in all but name.)
MIN_DIVISOR = 1e-4
MAX_PENALTY = 2.0  # OpenAI's range for presence and frequency penalties: -2 to 2


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    seed: int | None = None
    # OpenAI's penalties, on the tokens generated so far (not the prompt): each logit loses
    # presence once if its token appeared, and frequency for every time it did.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def validate(self) -> None:
        """Raises UsageError naming the option of the first value that cannot be right."""
        for setting in fields(self):
            value = getattr(self, setting.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"--{setting.name.replace('_', '-')} must be a finite number, got {value}")
        if self.temperature < 0:
            raise UsageError(f"--temperature must be 0 (greedy) or more, got {self.temperature}")
        if 0 < self.temperature < MIN_DIVISOR:
            raise UsageError(f"--temperature must be 0 (greedy) or at least {MIN_DIVISOR} (smaller values overflow "
                             f"the logits), got {self.temperature}; use 0 for greedy")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UsageError(f"--top-k must be 0 (off) or more, got {self.top_k}")
        if not 0 <= self.min_p < 1:
            raise UsageError(f"--min-p must be in [0, 1), got {self.min_p}")
        if self.repetition_penalty < MIN_DIVISOR:
            raise UsageError(f"--repetition-penalty must be at least {MIN_DIVISOR} (1 is off; smaller values overflow "
                             f"the logits), got {self.repetition_penalty}")
        if self.no_repeat_ngram_size < 0:
            raise UsageError(f"--no-repeat-ngram-size must be 0 (off) or more, got {self.no_repeat_ngram_size}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -MAX_PENALTY <= getattr(self, name) <= MAX_PENALTY:
                raise UsageError(f"--{name.replace('_', '-')} must be between -{MAX_PENALTY:g} and {MAX_PENALTY:g}, "
                                 f"got {getattr(self, name)}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"--seed must be between 0 and {MAX_SEED} (2**32-1), got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class TokenPicker:
    """Applies penalties and warpers to the last logits and picks one token per row.

    Uses transformers' logits processors, so each setting means exactly what it
    means in ``model.generate``.
    """

    def __init__(self, params: SamplingParams, device):
        import torch
        import transformers as tf

        self.greedy = params.greedy
        processors = []
        if params.repetition_penalty != 1.0:
            processors.append(tf.RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        if params.no_repeat_ngram_size > 0:
            processors.append(tf.NoRepeatNGramLogitsProcessor(params.no_repeat_ngram_size))
        if not self.greedy:
            if params.temperature != 1.0:
                processors.append(tf.TemperatureLogitsWarper(params.temperature))
            if params.top_k > 0:
                processors.append(tf.TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                processors.append(tf.TopPLogitsWarper(params.top_p))
            if params.min_p > 0:
                processors.append(tf.MinPLogitsWarper(params.min_p))
        self.processors = tf.LogitsProcessorList(processors)
        self.presence, self.frequency = params.presence_penalty, params.frequency_penalty
        self.needs_generated = bool(self.presence or self.frequency)
        self.needs_history = bool(processors) and (params.repetition_penalty != 1.0
                                                   or params.no_repeat_ngram_size > 0)
        self.device = device
        # Without --seed, a run still draws one base seed: each request's stream derives from it.
        self.seed = params.seed if params.seed is not None else secrets.randbits(32)

    def generators(self, request_keys: list) -> list | None:
        """One random stream per request, seeded from the run's seed and the request's key.

        A request then samples the same tokens whichever batch it lands in and whatever ran
        before it: a resumed --output run writes what one uninterrupted run would have written.
        None when greedy (nothing is drawn).
        """
        import torch

        if self.greedy:
            return None
        streams = []
        for key in request_keys:
            digest = hashlib.sha256(f"{self.seed}:{key}".encode()).digest()
            streams.append(torch.Generator(device=self.device).manual_seed(int.from_bytes(digest[:8], "little")))
        return streams

    def __call__(self, history, logits, generators: list | None, generated: list[list[int]] | None = None):
        """history: (batch, seq) ids so far (may be None when no processor needs it); ``generators``:
        the rows' streams, from ``generators`` (kept across the steps of a batch); ``generated``: each
        row's generated ids (needed when ``needs_generated``)."""
        import torch

        logits = logits.float()
        if self.needs_generated:
            logits = self._penalised(logits, generated)
        if len(self.processors):
            logits = self.processors(history, logits)
        if self.greedy:
            return logits.argmax(dim=-1)
        # Inverse-CDF sampling with one uniform draw per row from the row's own stream (a loop
        # of scalar draws: cheaper than a multinomial call per row). u in (0, total]: the first
        # index whose running sum reaches it is never a token of probability 0.
        cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
        draws = torch.stack([1 - torch.rand((), generator=stream, device=self.device) for stream in generators])
        picked = torch.searchsorted(cdf, (draws * cdf[:, -1]).unsqueeze(1).to(cdf.dtype))
        return picked.squeeze(1).clamp(max=cdf.shape[-1] - 1)

    def _penalised(self, logits, generated: list[list[int]]):
        import torch

        counts = torch.zeros_like(logits)
        for row, ids in enumerate(generated):
            if ids:
                counts[row].index_add_(0, torch.tensor(ids, device=logits.device),
                                       torch.ones(len(ids), device=logits.device, dtype=logits.dtype))
        return logits - self.frequency * counts - self.presence * (counts > 0).to(logits.dtype)
