"""The engine hands the model a few shapes, not every shape: bfloat16 oneDNN state per new shape
is never freed on CPU (benchmarks/soak.py: a server grew without end before the buckets)."""

from __future__ import annotations

import random

from gptcli.engine import scheduler as sched
from gptcli.engine.api import Request
from gptcli.engine.shapes import power_of_two_groups, row_bucket, width_bucket
from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM


def test_buckets_round_up_and_groups_are_powers_of_two():
    assert [row_bucket(n) for n in (1, 3, 9, 13, 33, 100, 130)] == [1, 4, 12, 16, 48, 128, 192]
    assert [width_bucket(n) for n in (1, 17, 65, 300, 1025, 3000)] == [16, 32, 96, 384, 1536, 3072]
    assert [len(g) for g in power_of_two_groups(list(range(11)))] == [8, 2, 1]
    assert sum(power_of_two_groups(list(range(11))), []) == list(range(11))  # order kept


def test_a_varied_workload_meets_a_bounded_set_of_shapes(tiny_llama, monkeypatch):
    lm = load_model(LoadOptions(str(tiny_llama), dtype="float32"), accept=(CAUSAL_LM,), command="generate")
    shapes = set()
    forward = sched.Scheduler._forward

    def recording(self, ids, attention, positions, cache, *extra):
        shapes.add(tuple(ids.shape))
        return forward(self, ids, attention, positions, cache, *extra)

    monkeypatch.setattr(sched.Scheduler, "_forward", recording)
    rng = random.Random(0)
    scheduler = sched.Scheduler(lm, batch_size=24)
    for i in range(60):  # prompts of 1-60 tokens, limits of 1-12: every width and row count turns up
        scheduler.submit(Request(i, tuple(rng.randrange(5, 250) for _ in range(rng.randint(1, 60))),
                                 rng.randint(1, 12)))
        if i % 7 == 0:
            scheduler.step()
    steps = 0
    while scheduler.has_work() and steps < 500:
        scheduler.step()
        steps += 1
    assert not scheduler.has_work()
    assert all(rows == row_bucket(rows) or rows & (rows - 1) == 0 for rows, _ in shapes)
    assert all(width == 1 or width == width_bucket(width) for _, width in shapes)
    assert len(shapes) <= 20, sorted(shapes)
