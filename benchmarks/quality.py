"""Hand-run quality benchmark: `gptcli eval` with its defaults against plain baselines, on the public sets.

For each public set (benchmarks/data/public/<set>/test.jsonl, the held-out split) it runs
`.venv/bin/gptcli eval TASK --data FILE --json` as a subprocess (the real command path) and,
beside it, the simplest baselines a user could write in a few lines:

- classify: MiniLM cosine to a label sentence ("This is a {label} review." for sentiment,
  "This news article is about {label}." otherwise), in plain transformers with
  sentence-transformers-style mean pooling; and the majority class of the test set;
- summarize: the article's first sentence, scored with gptcli.services.metrics.rouge;
- translate: the English source copied unchanged, scored with chrF/BLEU from gptcli.services.metrics.

Writes benchmarks/results/quality.txt. Measure on an idle machine: the seconds column means nothing otherwise.

    .venv/bin/python benchmarks/quality.py                       # everything, in full
    .venv/bin/python benchmarks/quality.py --tasks classify --sets sst2,ag_news
    .venv/bin/python benchmarks/quality.py --tasks summarize,translate --limit 5
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import provenance  # noqa: E402  (benchmarks/, on the path when a benchmark runs as a script)
DATA = ROOT / "benchmarks" / "data" / "public"
RESULT = ROOT / "benchmarks" / "results" / "quality.txt"
GPTCLI = ROOT / ".venv" / "bin" / "gptcli"

SETS = {  # set -> (task, label template for the plain MiniLM baseline)
    "sst2": ("classify", "This is a {label} review."),
    "uci_reviews": ("classify", "This is a {label} review."),
    "ag_news": ("classify", "This news article is about {label}."),
    "dbpedia14": ("classify", "This news article is about {label}."),
    "xsum": ("summarize", None),
    "gigaword_textsum": ("summarize", None),
    "wmt16_en_fi": ("translate", None),
    "tatoeba_en_ro": ("translate", None),
}


def read_rows(name: str, limit: int | None) -> list[dict]:
    lines = (DATA / name / "test.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return rows[:limit] if limit else rows


def run_gptcli_eval(task: str, rows: list[dict]) -> tuple[dict, float]:
    """`gptcli eval TASK --data FILE --json` with gptcli's defaults; the scores and the wall seconds."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data.jsonl"
        data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        command = [str(GPTCLI), "eval", task, "--data", str(data), "--json"]
        if task == "translate":
            command += ["--to", rows[0]["to"]]  # the target language is required; every row of a set shares it
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-600:]}")
    return json.loads(done.stdout), seconds


# --- classify baselines ---------------------------------------------------------------------------

def minilm_folder() -> str:
    from gptcli.models.resolve import resolve  # only to find the same local MiniLM files

    source = resolve("minilm")
    return str(source.folder or source.hub_id)


def mean_pooled(texts: list[str], tokenizer, model) -> "torch.Tensor":
    """Sentence-transformers-style embeddings: mean of the token states under the attention mask, L2-normalised."""
    import torch

    vectors = []
    for start in range(0, len(texts), 32):
        batch = tokenizer(texts[start:start + 32], padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            states = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        vectors.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(vectors)


def plain_minilm(rows: list[dict], labels: list[str], template: str) -> list[str]:
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_folder()
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    texts = mean_pooled([row["text"] for row in rows], tokenizer, model)
    descriptions = mean_pooled([template.format(label=label) for label in labels], tokenizer, model)
    best = (texts @ descriptions.T).argmax(dim=1).tolist()
    return [labels[index] for index in best]


def classify_row(name: str, rows: list[dict], template: str) -> dict:
    from gptcli.services.metrics import classification_report

    labels = sorted({row["label"] for row in rows})
    references = [row["label"] for row in rows]
    scores, seconds = run_gptcli_eval("classify", rows)
    started = time.perf_counter()
    plain = classification_report(references, plain_minilm(rows, labels, template), labels)
    plain_seconds = time.perf_counter() - started
    majority = Counter(references).most_common(1)[0][0]
    majority_report = classification_report(references, [majority] * len(rows), labels)
    return {"task": "classify", "set": name, "rows": len(rows), "metric": "accuracy",
            "gptcli": scores["accuracy"], "gptcli_macro_f1": scores.get("macro_f1"),
            "baselines": {"plain MiniLM": plain.accuracy, f"majority ({majority})": majority_report.accuracy},
            "seconds": seconds, "baseline_seconds": plain_seconds}


# --- summarize / translate baselines --------------------------------------------------------------

def first_sentence(text: str) -> str:
    """The lead: up to the first sentence end (or the first line, which XSum articles break after)."""
    line = text.strip().split("\n", 1)[0]
    match = re.match(r"(.+?[.!?])(\s|$)", line)
    return match.group(1) if match else line


def summarize_row(name: str, rows: list[dict]) -> dict:
    from gptcli.services.metrics import rouge

    scores, seconds = run_gptcli_eval("summarize", rows)
    lead = rouge([first_sentence(row["text"]) for row in rows], [row["summary"] for row in rows])
    return {"task": "summarize", "set": name, "rows": len(rows), "metric": "ROUGE-L F",
            "gptcli": _find(scores, "rougeL"), "baselines": {"first sentence": lead["rougeL"]},
            "seconds": seconds}


def translate_row(name: str, rows: list[dict]) -> dict:
    from gptcli.services.metrics import bleu, bleu_tokenizer, chrf

    scores, seconds = run_gptcli_eval("translate", rows)
    sources, references = [row["text"] for row in rows], [row["translation"] for row in rows]
    copy_chrf = chrf(sources, references).score
    copy_bleu = bleu(sources, references, bleu_tokenizer(rows[0]["to"])).score
    return {"task": "translate", "set": name, "rows": len(rows), "metric": "chrF / BLEU",
            "gptcli": f"{_find(scores, 'chrf'):.1f} / {_find(scores, 'bleu'):.1f}",
            "baselines": {"copy source": f"{copy_chrf:.1f} / {copy_bleu:.1f}"}, "seconds": seconds}


def _find(scores, key: str):
    """A score by name in eval's JSON object, nested or not; a {"score": x} object gives x."""
    if isinstance(scores, dict):
        for name, value in scores.items():
            if name.lower() == key.lower():
                return value["score"] if isinstance(value, dict) and "score" in value else value
        for value in scores.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


# --- the table ------------------------------------------------------------------------------------

def _cell(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def table(results: list[dict]) -> str:
    lines = ["| task | set | rows | metric | gptcli default | baselines | seconds (gptcli eval) |",
             "|---|---|---|---|---|---|---|"]
    for row in results:
        baselines = "; ".join(f"{name} {_cell(value)}" for name, value in row["baselines"].items())
        gptcli = _cell(row["gptcli"])
        if row.get("gptcli_macro_f1") is not None:
            gptcli += f" (macro-F1 {row['gptcli_macro_f1']:.3f})"
        lines.append(f"| {row['task']} | {row['set']} | {row['rows']} | {row['metric']} | {gptcli} | "
                     f"{baselines} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def busy_note() -> str:
    """Whether another test run shares the machine now: it slows every seconds figure, not the scores."""
    found = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, text=True).stdout.split()
    return f"NOT idle: {len(found)} pytest processes running" if found else "idle (no pytest running)"


def environment(busy_at_start: str) -> str:
    version = subprocess.run([str(GPTCLI), "--version"], capture_output=True, text=True).stdout.strip()
    return "\n".join([provenance.stamp(), provenance.machine(), provenance.versions(version or "gptcli ?"),
                      f"load: at start {busy_at_start}; at end {busy_note()}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated public sets")
    parser.add_argument("--tasks", default="classify,summarize,translate", help="comma-separated tasks")
    parser.add_argument("--limit", type=int, default=None, help="rows per set (the first N of test.jsonl)")
    parser.add_argument("--output", default=str(RESULT))
    args = parser.parse_args()
    tasks = set(args.tasks.split(","))
    busy_at_start = busy_note()
    results = []
    for name in args.sets.split(","):
        task, template = SETS[name]
        if task not in tasks:
            continue
        rows = read_rows(name, args.limit)
        print(f"{task} {name}: {len(rows)} rows ...", file=sys.stderr, flush=True)
        if task == "classify":
            results.append(classify_row(name, rows, template))
        elif task == "summarize":
            results.append(summarize_row(name, rows))
        else:
            results.append(translate_row(name, rows))
        print(table(results[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    report = (f"# gptcli quality on public held-out sets (benchmarks/quality.py {' '.join(sys.argv[1:])})\n\n"
              f"{table(results)}\n\n{environment(busy_at_start)}\n")
    Path(args.output).write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
