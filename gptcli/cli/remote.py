"""Running a command's work on a `gptcli serve` (--server): bodies out, answers back in input order.

The command reads, checks and writes exactly as it does locally; only the model work goes
over HTTP, a bounded number of requests at a time so the server can batch them together.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

IN_FLIGHT = 32  # requests a batch command keeps open at once: enough to fill the server's batch


def ordered(client, path: str, bodies: list[dict], in_flight: int = IN_FLIGHT) -> Iterator[tuple[int, dict]]:
    """POST each body to ``path``; yield (index, answer) in input order, each as soon as it and
    every one before it is back. The first error is raised once the requests before it are out."""
    with ThreadPoolExecutor(max(1, min(in_flight, len(bodies)))) as pool:
        futures: list[Future] = []
        submitted = 0
        for index in range(len(bodies)):
            while submitted < len(bodies) and submitted - index < in_flight:
                futures.append(pool.submit(client.post, path, bodies[submitted]))
                submitted += 1
            try:
                yield index, futures[index].result()
            except BaseException:
                for future in futures[index + 1:]:
                    future.cancel()
                raise


# summarize, translate and classify send their items in parts: each answer is written as soon as it
# and those before it are back, so --output keeps what is done if the run stops.
TASK_ITEMS = 16  # items per request
TASK_BYTES = 2**21  # and about this much JSON text at most (`gptcli serve` takes bodies of 4 MiB by default)
# The server runs one part at a time: one running and one waiting keeps it busy, and no request
# waits for long behind others of the same run (each request has the client's timeout).
TASK_IN_FLIGHT = 2


def parts(items: list, text_of, most: int = TASK_ITEMS, limit: int = TASK_BYTES) -> list[list]:
    """``items`` in runs of at most ``most`` items and about ``limit`` bytes of their texts as JSON
    (``text_of(item)``); an item larger than that alone is a run of its own."""
    import json

    runs: list[list] = []
    used = 0
    for item in items:
        size = len(json.dumps(text_of(item)))  # as the client sends it: \u escapes count
        if not runs or len(runs[-1]) >= most or used + size > limit:
            runs.append([])
            used = 0
        runs[-1].append(item)
        used += size
    return runs


class TaskAnswers:
    """The answers to a task's parts (``bodies`` POSTed to ``path``), in order.

    Iterating gives every item's ItemResult in input order; each answer's ``notes`` (warnings
    about the whole run) are warned once; its ``stats`` are summed into ``stats``; ``run``
    holds the last answer's facts about the run (translate: the target language).
    """

    def __init__(self, client, path: str, bodies: list[dict]):
        self.client = client
        self.path = path
        self.bodies = bodies
        self.stats: dict = {}
        self.run: dict = {}

    def __iter__(self):
        from gptcli import console
        from gptcli.services.records import ItemResult

        said: set[str] = set()
        for _index, answer in ordered(self.client, self.path, self.bodies, TASK_IN_FLIGHT):
            for note in answer.get("notes", ()):
                if note not in said:
                    said.add(note)
                    console.warn(note)
            for name, value in answer.get("stats", {}).items():
                self.stats[name] = self.stats.get(name, 0) + value
            self.run.update(answer.get("run", {}))
            for result in answer["results"]:
                yield ItemResult.from_dict(result)


def served_model(server: str, model: str | None, task: str) -> dict:
    """The name and identity of the model the server at ``server`` runs ``task`` with when asked for
    ``model`` (None: its own choice). Raises the server's error when it does not serve ``model``."""
    from urllib.parse import urlencode

    from gptcli.client import ServerClient

    query = {"task": task, **({"model": model} if model is not None else {})}
    return ServerClient(server).get(f"/gptcli/v1/info?{urlencode(query)}")
