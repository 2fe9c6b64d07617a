"""Inputs for the task benchmarks, built from the labelled sentences in benchmarks/data/."""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def sentences() -> list[str]:
    rows = []
    for name in ("sentiment", "topics"):
        rows += [json.loads(line)["text"] for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line]
    return rows


def _take(count: int, pool: list[str]) -> list[str]:
    return [pool[i % len(pool)] for i in range(count)]


def classify_lines(count: int) -> str:
    return "\n".join(_take(count, sentences())) + "\n"


def translate_lines(count: int) -> str:
    return "\n".join(_take(count, sentences()[::-1])) + "\n"


def paragraphs(count: int, per_paragraph: int = 6) -> str:
    """jsonl records with a text of several sentences each (summarize --input reads jsonl)."""
    pool = sentences()
    records = [{"id": i + 1, "text": " ".join(_take(per_paragraph, pool[i * per_paragraph:] + pool))}
               for i in range(count)]
    return "".join(json.dumps(record) + "\n" for record in records)
