"""Text generation jobs: many prompts (and -n samples) through the engine, results in input order.

The decode loop itself is the engine's (``gptcli.engine.scheduler``); a single prompt, a batch
file and ``-n`` samples are all ways of feeding it requests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

from gptcli.engine.api import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, GenerationStats  # noqa: F401  (read here)
from gptcli.services.prompting import Fitted
from gptcli.engine.constraints import Constraint
from gptcli.engine.sampling import SamplingParams


@dataclass(frozen=True)
class GenerationParams:
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    num_samples: int = 1
    batch_size: int = 8
    max_batch_tokens: int | None = None  # rows x (prompt + new tokens) per batch; None: rows only
    constraint: Constraint | None = None  # what every output must match (engine.constraints)


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


def generate(lm, prompts: Iterable[Fitted], params: GenerationParams, stream: bool = False,
             stats: GenerationStats | None = None, keys: list | None = None,
             per_prompt: list[GenerationParams] | None = None) -> Iterator[TextChunk | Completion]:
    """Generate for many prompts; yield Completions in input order (and TextChunks if stream).

    The prompts run on the engine's scheduler (continuous batching): a row that ends makes
    room for the next prompt at once; results are put back in input order here.

    Args:
        lm: a LoadedModel of kind causal-lm.
        prompts: token ids already fitted to the context (``prompting.fit_to_context``).
        params: sampling, stop strings, samples per prompt and batch size.
        stream: also yield TextChunks as text becomes final (meant for one prompt).
        stats: filled in with token counts and timings when given.
        keys: a stable name for each prompt (its input id): with a seed, a prompt's samples depend
            only on the seed, its key and its sample number, not on its batch or position.
            Default: its position.
        per_prompt: each prompt's own sampling, stops and samples (an OpenAI batch line's body);
            ``params`` still decides the batch size and token budget.

    Returns:
        An iterator; Completions come in (index, sample) order, each as soon as
        it and every one before it is done.
    """
    from gptcli.engine.api import Delta
    from gptcli.engine.backends import engine_for

    prompts = list(prompts)
    keys = list(range(len(prompts))) if keys is None else keys
    own = per_prompt if per_prompt is not None else [params] * len(prompts)
    requests = [_request(p, (i, s), f"{keys[i]}:{s}", own[i], stream) for i, p in enumerate(prompts)
                for s in range(own[i].num_samples)]
    stats = stats if stats is not None else GenerationStats()
    engine = engine_for(lm, params.batch_size, params.max_batch_tokens, stats)
    order = [request.id for request in requests]
    done: dict[tuple[int, int], Completion] = {}
    released = 0
    for event in engine.run(requests):
        index, sample = event.request_id
        if isinstance(event, Delta):
            if event.text:
                yield TextChunk(index, sample, event.text)
            continue
        done[event.request_id] = Completion(index, sample, event.text, event.prompt_tokens,
                                            event.generated_tokens, event.finish_reason)
        while released < len(order) and order[released] in done:
            yield done.pop(order[released])
            released += 1


def _request(prompt: Fitted, request_id: tuple[int, int], key: str, params: GenerationParams, stream: bool):
    from gptcli.engine.api import Request

    return Request(request_id, tuple(prompt.ids), prompt.max_new_tokens, params.sampling, params.stop, key,
                   stream=stream, constraint=params.constraint, inputs=prompt.inputs)
