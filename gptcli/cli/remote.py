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
