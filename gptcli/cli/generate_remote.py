"""`gptcli generate --server URL`: the same job, its model work done by a running `gptcli serve`.

The server fits each prompt to its model's context and runs it on its shared engine; what
comes back is written here exactly as a local run writes it (order, resume, warnings).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, replace

GENERATE_PATH = "/gptcli/v1/generate"


def generate_remote(run, model: str | None, items: list, sink, clock) -> None:
    """Run ``items`` (cli.generate.Item) on the server named by ``run.server``; write through ``sink``."""
    from gptcli import console
    from gptcli.cli import remote
    from gptcli.client import ServerClient
    from gptcli.outputs import input_key
    from gptcli.services.generate import Completion

    client = ServerClient(run.server)
    if any(item.prompt.images for item in items):
        _check_takes_images(run.server, model)
    run_seed = _run_seed(run.params.sampling)
    bodies = _Bodies(lambda item: _body(run, model, item, input_key(item.id), run_seed), items)
    total = sum(item.job.params.num_samples for item in items)
    if run.openai_batch:  # OpenAI result lines name the served model
        sink.model = client.get("/gptcli/v1/info")["model"]
    if run.stream:
        answers = [(0, _streamed(client, bodies[0], sink))]
    else:
        answers = remote.ordered(client, GENERATE_PATH, bodies)
    prompt_tokens = generated = 0
    with console.Progress("generating", total) as progress:
        for index, answer in answers:
            for note in answer.get("notes", ()):
                console.warn(note)
            for fields in answer["completions"]:
                completion = Completion(index=index, **fields)
                prompt_tokens, generated = prompt_tokens + completion.prompt_tokens, generated + completion.generated_tokens
                sink.write(items[index], completion)
                progress.advance()
    sink.finish_note(total, run.max_new_tokens)
    if run.show_stats:
        console.info(f"server {client.url} · prompt {prompt_tokens} tok · {generated} tok · "
                     f"total {time.perf_counter() - clock.started:.2f} s")


class _Bodies:
    """The request bodies, each made when it is sent: a prompt's images become data URLs only then,
    so a batch of thousands of photos never holds them all as base64 at once."""

    def __init__(self, make, items: list):
        self.make = make
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.make(self.items[index])


def _check_takes_images(server: str, model: str | None) -> None:
    """Exit 2 before any request when the served model reads text only."""
    from gptcli.cli.remote import served_model
    from gptcli.errors import InputError

    info = served_model(server, model, "generate")
    if not info.get("takes_images"):
        from gptcli.models.kinds import VISION_MODELS_HINT

        raise InputError(f"the input has images, and {info['model']} on {server} reads text only; serve "
                         f"{VISION_MODELS_HINT}")


def _run_seed(sampling) -> int | None:
    """Without --seed a local run draws one seed for the whole run; draw it here, so the server
    samples this run's requests from it as a local run would (and not from a seed of its own)."""
    return None if sampling.greedy or sampling.seed is not None else secrets.randbits(32)


def _body(run, model: str | None, item, key: str, run_seed: int | None) -> dict:
    job, prompt = item.job, item.prompt
    sampling = job.params.sampling
    if sampling.seed is None and not sampling.greedy:
        sampling = replace(sampling, seed=run_seed if run_seed is not None else secrets.randbits(32))
    return {"model": model, "prompt": prompt.text, "messages": list(prompt.messages) if prompt.messages else None,
            "where": prompt.where, "system": run.system, "raw": job.raw, "truncate": run.truncate,
            "max_new_tokens": job.max_new_tokens, "sampling": asdict(sampling), "stop": list(job.params.stop),
            "num_samples": job.params.num_samples, "key": key,
            "constraint": [job.params.constraint.kind, job.params.constraint.spec] if job.params.constraint else None,
            "images": _data_urls(prompt.images)}


def _data_urls(images) -> list[str]:
    from gptcli.imageio import data_url

    return [data_url(image) for image in images]


def _streamed(client, body: dict, sink) -> dict:
    """Stream one prompt's text to the sink as it comes; the final answer."""
    for event in client.stream(GENERATE_PATH, {**body, "stream": True}):
        if "text" in event:
            sink.stream_text(event["text"])
        else:
            return event
    from gptcli.errors import GptcliError

    raise GptcliError(f"the stream from {client.url} ended without a result (did the server stop?)")
