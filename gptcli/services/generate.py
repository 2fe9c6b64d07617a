"""Text generation: batched, streamed, stop-aware, and in input order.

``stream_generate`` is the one decode loop; everything else (a single
prompt, a batch file, ``-n`` samples) is a way of feeding it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

from gptcli.services.decoding import RowText
from gptcli.services.prompting import Fitted
from gptcli.services.sampling import SamplingParams, TokenPicker

FINISH_STOP, FINISH_EOS, FINISH_LENGTH = "stop", "eos", "length"
SORT_WINDOW_BATCHES = 8  # sort by length within windows this many batches long (see _plan_batches)


@dataclass(frozen=True)
class GenerationParams:
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    num_samples: int = 1
    batch_size: int = 8
    max_batch_tokens: int | None = None  # rows x (prompt + new tokens) per batch; None: rows only


@dataclass
class Completion:
    """One finished result: input ``index``, ``sample`` number (for -n), text and why it ended."""

    index: int
    sample: int
    text: str
    prompt_tokens: int
    generated_tokens: int
    finish_reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TextChunk:
    """Newly final text of a row that is still generating (streaming)."""

    index: int
    sample: int
    text: str


@dataclass
class GenerationStats:
    """Filled in while generating, for --stats."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    first_token_seconds: float | None = None
    decode_seconds: float = 0.0
    _started: float = field(default_factory=time.perf_counter, repr=False)

    def mark_first_token(self) -> None:
        if self.first_token_seconds is None:
            self.first_token_seconds = time.perf_counter() - self._started


@dataclass(frozen=True)
class _Job:
    index: int
    sample: int
    ids: list[int]
    max_new_tokens: int
    key: str = ""  # what seeds this request's random stream: its prompt's key and sample number


def generate(lm, prompts: Iterable[Fitted], params: GenerationParams, stream: bool = False,
             stats: GenerationStats | None = None, keys: list | None = None) -> Iterator[TextChunk | Completion]:
    """Generate for many prompts; yield Completions in input order (and TextChunks if stream).

    Args:
        lm: a LoadedModel of kind causal-lm.
        prompts: token ids already fitted to the context (``prompting.fit_to_context``).
        params: sampling, stop strings, samples per prompt and batch size.
        stream: also yield TextChunks as text becomes final (meant for one prompt).
        stats: filled in with token counts and timings when given.
        keys: a stable name for each prompt (its input id): with a seed, a prompt's samples depend
            only on the seed, its key and its sample number, not on its batch or position.
            Default: its position.

    Returns:
        An iterator; Completions come in (index, sample) order, each as soon as
        it and every one before it is done.
    """
    prompts = list(prompts)
    keys = list(range(len(prompts))) if keys is None else keys
    jobs = [_Job(i, s, p.ids, p.max_new_tokens, f"{keys[i]}:{s}") for i, p in enumerate(prompts)
            for s in range(params.num_samples)]
    picker = TokenPicker(params.sampling, lm.device)
    stats = stats or GenerationStats()
    order = [(job.index, job.sample) for job in jobs]
    done: dict[tuple[int, int], Completion] = {}
    released = 0
    for batch in _plan_batches(jobs, params.batch_size, params.max_batch_tokens):
        for event in _run_batch(lm, batch, params, picker, stream, stats):
            if isinstance(event, TextChunk):
                yield event
                continue
            done[(event.index, event.sample)] = event
            while released < len(order) and order[released] in done:
                yield done.pop(order[released])
                released += 1


def _plan_batches(jobs: list[_Job], batch_size: int, max_tokens: int | None = None) -> Iterator[list[_Job]]:
    """Length-sorted batches, sorted within windows of consecutive inputs.

    Sorting the whole input would minimise padding but hold back the first
    record until the end of the run; windows keep most of the gain while
    records still reach the output (and survive a crash) as the run goes.
    A batch also stops growing when its rows x longest (prompt + new tokens)
    would pass ``max_tokens``: memory grows with that product, not with rows.
    """
    window = batch_size * SORT_WINDOW_BATCHES
    for start in range(0, len(jobs), window):
        batch: list[_Job] = []
        widest = 0
        for job in sorted(jobs[start:start + window], key=lambda job: -len(job.ids)):
            width = max(widest, len(job.ids) + job.max_new_tokens)
            if batch and (len(batch) == batch_size or (max_tokens and (len(batch) + 1) * width > max_tokens)):
                yield batch
                batch, width = [], len(job.ids) + job.max_new_tokens
            batch.append(job)
            widest = width
        if batch:
            yield batch


def _run_batch(lm, batch: list[_Job], params: GenerationParams, picker: TokenPicker, stream: bool,
               stats: GenerationStats) -> Iterator[TextChunk | Completion]:
    import torch

    from gptcli.services.kvcache import cache_argument, reserved_cache_for, returned_cache

    model, tokenizer = lm.model, lm.tokenizer
    eos_ids = _eos_ids(lm)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (min(eos_ids) if eos_ids else 0)
    input_ids, attention = _left_pad([job.ids for job in batch], pad_id, model.device)
    rows = [RowText(tokenizer, params.stop) for _ in batch]
    finish: list[str | None] = [None] * len(batch)
    stats.prompt_tokens += sum(len(job.ids) for job in batch)
    history = input_ids
    step_ids = input_ids
    positions = _positions(attention)
    longest_new = max(job.max_new_tokens for job in batch)
    streams = picker.generators([job.key for job in batch])
    cache = reserved_cache_for(model, input_ids.shape[1] + longest_new)  # None: the model's own kind
    cache_kw = cache_argument(model)
    started = time.perf_counter()
    with torch.inference_mode():
        for step in range(longest_new):
            out = model(input_ids=step_ids, attention_mask=attention, position_ids=positions,
                        use_cache=True, **{cache_kw: cache}, **_last_logits_only(model))
            cache = returned_cache(out)
            next_ids = picker(history, out.logits[:, -1, :], streams)
            stats.mark_first_token()
            next_list = next_ids.tolist()
            for r, job in enumerate(batch):
                if finish[r] is not None:
                    next_list[r] = pad_id
                    continue
                finish[r] = _advance_row(rows[r], next_list[r], eos_ids, job.max_new_tokens)
                if stream and finish[r] is None:
                    text = rows[r].delta()
                    if text:
                        yield TextChunk(job.index, job.sample, text)
                if finish[r] is not None:
                    yield from _finish_events(rows[r], job, finish[r], stream)
            if all(f is not None for f in finish):
                break
            step_ids = torch.tensor(next_list, device=model.device).unsqueeze(1)
            attention = torch.cat([attention, attention.new_ones((len(batch), 1))], dim=1)
            positions = positions[:, -1:] + 1
            if picker.needs_history:
                history = torch.cat([history, step_ids], dim=1)
    stats.generated_tokens += sum(len(row.ids) + (f == FINISH_EOS) for row, f in zip(rows, finish))
    stats.decode_seconds += time.perf_counter() - started


def _advance_row(row: RowText, token: int, eos_ids: set[int], max_new_tokens: int) -> str | None:
    """Add one token to a row; return its finish reason when it has just ended."""
    if token in eos_ids:
        return FINISH_EOS
    if row.add(token):
        return FINISH_STOP
    if len(row.ids) >= max_new_tokens:
        return FINISH_LENGTH
    return None


def _finish_events(row: RowText, job: _Job, reason: str, stream: bool) -> Iterator[TextChunk | Completion]:
    if stream:
        tail = row.delta(final=True)
        if tail:
            yield TextChunk(job.index, job.sample, tail)
    generated = len(row.ids) + (reason == FINISH_EOS)  # the EOS token was generated too
    yield Completion(job.index, job.sample, row.text(), len(job.ids), generated, reason)


def _left_pad(sequences: list[list[int]], pad_id: int, device):
    import torch

    width = max(len(ids) for ids in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def _positions(mask):
    """Each row's positions counted from 0 at its first real token (pads at 0, masked anyway).

    A left-padded row then gets the positions it has alone: models with absolute position
    embeddings (GPT-2) would otherwise read a shifted prompt (tests/test_batch_invariance.py).
    """
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _eos_ids(lm) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(lm.model, "generation_config", None), lm.model.config, lm.tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def _last_logits_only(model) -> dict:
    """Ask for the last position's logits only, when the model supports it (saves the
    prompt-length x vocabulary projection on the first step)."""
    import inspect

    cached = getattr(model, "_gptcli_logits_kw", None)
    if cached is None:
        cached = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        model._gptcli_logits_kw = cached
    return cached
