"""Zero-shot classification accuracy of gptcli's classify service on labelled sentence sets.

Runs each method through the real loader and ``gptcli.services.classify`` and prints
accuracy per method and data set. Data: benchmarks/data/*.jsonl (records with
``text`` and ``label``), written for this benchmark. Results: docs/classify.md.

    .venv/bin/python benchmarks/classify_accuracy.py                 # every method
    .venv/bin/python benchmarks/classify_accuracy.py --only minilm   # methods whose name has "minilm"
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from gptcli.models import LoadOptions, load_model
from gptcli.models.kinds import CAUSAL_LM, EMBEDDING
from gptcli.models.resolve import packaged_minilm_folder
from gptcli.services.classify import ClassifyParams, classify

DATA = Path(__file__).resolve().parent / "data"
CHAT_PROMPT_B = "Text: {text}\n\nWhich label fits this text best: {labels}?"


@dataclass(frozen=True)
class Method:
    name: str
    model: str  # "lm" (the default causal LM) or "minilm"
    params: dict = field(default_factory=dict)
    words: dict = field(default_factory=dict)  # data set label -> word the model is given


METHODS = [
    Method("lm default (prompt A, 'Label:'), calibrated", "lm"),
    Method("lm default (prompt A, 'Label:'), uncalibrated", "lm", {"calibrate": False}),
    Method("lm prompt A, no answer prefix, calibrated", "lm", {"answer_prefix": ""}),
    Method("lm prompt A, no answer prefix, uncalibrated", "lm", {"answer_prefix": "", "calibrate": False}),
    Method("lm prompt A, 'Answer:', calibrated", "lm", {"answer_prefix": "Answer:"}),
    Method("lm prompt B, 'Label:', calibrated", "lm", {"prompt": CHAT_PROMPT_B}),
    Method("lm good/bad words, calibrated", "lm", words={"positive": "good", "negative": "bad"}),
    Method("minilm 'This text is about {}.', calibrated", "minilm",
           {"label_template": "This text is about {}.", "calibrate": True}),
    Method("minilm 'This text is about {}.', uncalibrated", "minilm",
           {"label_template": "This text is about {}.", "calibrate": False}),
    Method("minilm 'This example is {}.', calibrated", "minilm",
           {"label_template": "This example is {}.", "calibrate": True}),
    Method("minilm 'This example is {}.', uncalibrated", "minilm",
           {"label_template": "This example is {}.", "calibrate": False}),
    Method("minilm '{}' alone, calibrated", "minilm", {"label_template": "{}", "calibrate": True}),
    Method("minilm '{}' alone, uncalibrated", "minilm", {"label_template": "{}", "calibrate": False}),
]


def read_set(name: str) -> tuple[list[str], list[str]]:
    records = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines() if line.strip()]
    return [r["text"] for r in records], [r["label"] for r in records]


def accuracy(lm, method: Method, texts: list[str], gold: list[str]) -> float:
    labels = sorted(set(gold), key=gold.index)
    words = tuple(method.words.get(label, label) for label in labels)
    back = dict(zip(words, labels))
    params = ClassifyParams(labels=words, batch_size=16, **method.params)
    predicted = [back[result.label] for result in classify(lm, texts, params)]
    return sum(p == g for p, g in zip(predicted, gold)) / len(gold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run only methods whose name contains this")
    parser.add_argument("--sets", default="sentiment,topics")
    args = parser.parse_args()
    sets = {name: read_set(name) for name in args.sets.split(",")}
    models = {"lm": (LoadOptions(None), CAUSAL_LM), "minilm": (LoadOptions(str(packaged_minilm_folder())), EMBEDDING)}
    loaded: dict = {}
    print(f"{'method':55s} " + " ".join(f"{name} (n={len(texts)})".rjust(20) for name, (texts, _g) in sets.items()))
    for method in METHODS:
        if args.only not in method.name:
            continue
        if method.model not in loaded:
            options, kind = models[method.model]
            loaded[method.model] = load_model(options, accept=(kind,), command="classify")
        cells = []
        for name, (texts, gold) in sets.items():
            if method.words and not set(method.words) & set(gold):
                cells.append("-".rjust(20))
                continue
            started = time.perf_counter()
            score = accuracy(loaded[method.model], method, texts, gold)
            cells.append(f"{score:6.1%} ({time.perf_counter() - started:4.0f} s)".rjust(20))
        print(f"{method.name:55s} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
