"""Hand-run: presence / frequency penalties (on generated tokens only) for summarize and translate (issue 12).

For each public set and each (frequency, presence) setting it runs the service the commands run
(``gptcli.services.summarize.summary_results``, ``gptcli.services.translate.translation_results``)
with gptcli's defaults (default model, dtype, greedy decoding, batch size chosen from free memory, as
`gptcli eval` does), only the penalties changed, and scores the results:

- summarize: ROUGE-1/2/L F (gptcli.services.metrics.rouge), how the summaries ended (eos / stop /
  length), mean words; baseline: the article's first sentence (benchmarks/quality.py's);
- translate: chrF / BLEU, how the lines ended (eos / stop / length: "length" is a line cut at its token
  budget), lines still in another language; baseline: the source copied.

Greedy decoding is deterministic, so the noise on a difference is the choice of rows: each setting's
difference from the first setting of the grid (the default, 0/0) comes with a paired bootstrap over the
rows (95% interval; mean of per-row ROUGE-L, corpus chrF recomputed on each resample).

Tune on train (the default); report held-out figures with --split test for the settings chosen there.
Writes benchmarks/results/task_penalties.txt (rewritten after every setting, so a cut run keeps what it
measured). Measure with `nice -n 19` on a shared machine; the seconds column means little then.

    .venv/bin/python benchmarks/task_penalties.py                                  # train, the full grid
    .venv/bin/python benchmarks/task_penalties.py --sets tatoeba_en_ro --grid 0:0,0.6:0
    .venv/bin/python benchmarks/task_penalties.py --split test --grid 0:0,0.6:0 --output /tmp/test.txt
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import provenance  # noqa: E402  (benchmarks/, on the path when a benchmark runs as a script)
DATA = ROOT / "benchmarks" / "data" / "public"
RESULT = ROOT / "benchmarks" / "results" / "task_penalties.txt"
SETS = {"xsum": "summarize", "gigaword_textsum": "summarize", "tatoeba_en_ro": "translate",
        "wmt16_en_fi": "translate"}
GRID = "0:0,0.3:0,0.6:0,1.0:0,0:0.5,0.3:0.5,0.6:0.5,1.0:0.5"  # frequency:presence; the first is the reference
RESAMPLES = 1000


def read_rows(name: str, split: str, limit: int | None) -> list[dict]:
    lines = (DATA / name / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return rows[:limit] if limit else rows


def parse_grid(text: str) -> list[tuple[float, float]]:
    return [(float(f), float(p)) for f, p in (item.split(":") for item in text.split(","))]


def load_default_model(command: str, accept: tuple[str, ...]):
    from gptcli.models.loader import LoadOptions, load_model

    return load_model(LoadOptions(None, "auto", "auto"), accept, command)


# --- runs --------------------------------------------------------------------------------------------

def run_summarize(lm, rows: list[dict], frequency: float, presence: float, length: str = "medium") -> list[dict]:
    from gptcli.services.batching import auto_batched
    from gptcli.services.summarize import SummarizeParams, summary_results

    params = SummarizeParams(length)  # `gptcli summarize`'s defaults (medium, chunk) unless --length says
    params, _ = auto_batched(params, lm, True, params.row_tokens)
    params = replace(params, frequency_penalty=frequency, presence_penalty=presence)
    documents = [(row["text"], f"row {n}") for n, row in enumerate(rows)]
    return [result.fields for result in summary_results(lm, params, documents)]


def run_translate(lm, rows: list[dict], frequency: float, presence: float, length: str = "") -> list[dict]:
    from gptcli.services.batching import auto_batched
    from gptcli.services.translate import WRONG_LANGUAGE, TranslateParams, make_translator, translation_results

    params = TranslateParams(rows[0]["to"])  # `gptcli translate --to XX`'s defaults; every row shares "to"
    params, _ = auto_batched(params, lm, True, params.row_tokens)
    params = replace(params, frequency_penalty=frequency, presence_penalty=presence)
    translator = make_translator(lm, params)
    found = []
    for result in translation_results(translator, [row["text"].strip() for row in rows]):
        found.append({**result.fields, "wrong_language": bool(result.marks.get(WRONG_LANGUAGE))})
    return found


# --- scores ------------------------------------------------------------------------------------------

def first_sentence(text: str) -> str:
    from benchmarks.quality import first_sentence as lead

    return lead(text)


def rouge_rows(predictions: list[str], references: list[str]) -> list[float]:
    """Per-row ROUGE-L F (their mean is metrics.rouge's rougeL)."""
    from gptcli.services.metrics import rouge

    return [rouge([p], [r])["rougeL"] for p, r in zip(predictions, references)]


def bootstrap_mean_diff(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(a)
    diffs = []
    for _ in range(RESAMPLES):
        pick = [rng.randrange(n) for _ in range(n)]
        diffs.append(sum(a[i] - b[i] for i in pick) / n)
    diffs.sort()
    return diffs[int(0.025 * RESAMPLES)], diffs[int(0.975 * RESAMPLES) - 1]


def bootstrap_chrf_diff(a: list[str], b: list[str], references: list[str], seed: int = 0) -> tuple[float, float]:
    from sacrebleu.metrics import CHRF

    metric, rng, n = CHRF(), random.Random(seed), len(references)
    diffs = []
    for _ in range(RESAMPLES):
        pick = [rng.randrange(n) for _ in range(n)]
        refs = [[references[i] for i in pick]]
        diffs.append(metric.corpus_score([a[i] for i in pick], refs).score
                     - metric.corpus_score([b[i] for i in pick], refs).score)
    diffs.sort()
    return diffs[int(0.025 * RESAMPLES)], diffs[int(0.975 * RESAMPLES) - 1]


def score_summarize(rows: list[dict], found: list[dict], reference: dict | None) -> dict:
    from gptcli.services.metrics import rouge

    predictions, references = [f["summary"] or "" for f in found], [row["summary"] for row in rows]
    scores = rouge(predictions, references)
    per_row = rouge_rows(predictions, references)
    ends = Counter(f["finish_reason"] for f in found)
    out = {"rouge1": scores["rouge1"], "rouge2": scores["rouge2"], "rougeL": scores["rougeL"], "per_row": per_row,
           "predictions": predictions, "ends": f"{ends['eos']} / {ends['stop']} / {ends['length']}",
           "words": sum(len(p.split()) for p in predictions) / len(predictions)}
    if reference is not None:
        low, high = bootstrap_mean_diff(per_row, reference["per_row"])
        out["diff"] = (scores["rougeL"] - reference["rougeL"], low, high)
    return out


def score_translate(rows: list[dict], found: list[dict], reference: dict | None) -> dict:
    from gptcli.services.metrics import bleu, bleu_tokenizer, chrf

    predictions, references = [f["translation"] or "" for f in found], [row["translation"] for row in rows]
    ends = Counter(f["finish_reason"] for f in found)
    out = {"chrf": chrf(predictions, references).score,
           "bleu": bleu(predictions, references, bleu_tokenizer(rows[0]["to"])).score,
           "predictions": predictions, "ends": f"{ends['eos']} / {ends['stop']} / {ends['length']}",
           "length_share": ends["length"] / len(found), "wrong": sum(f["wrong_language"] for f in found),
           "tokens": sum(f["generated_tokens"] for f in found) / len(found)}
    if reference is not None:
        low, high = bootstrap_chrf_diff(predictions, reference["predictions"], references)
        out["diff"] = (out["chrf"] - reference["chrf"], low, high)
    return out


def baseline(task: str, rows: list[dict]) -> str:
    from gptcli.services.metrics import chrf, rouge

    if task == "summarize":
        lead = rouge([first_sentence(row["text"]) for row in rows], [row["summary"] for row in rows])["rougeL"]
        return f"first sentence ROUGE-L {lead:.3f} (1.1x: {1.1 * lead:.3f})"
    copy = chrf([row["text"] for row in rows], [row["translation"] for row in rows]).score
    return f"copy source chrF {copy:.1f}"


# --- the report --------------------------------------------------------------------------------------

def _diff(out: dict) -> str:
    if "diff" not in out:
        return "(reference)"
    value, low, high = out["diff"]
    digits = 1 if "chrf" in out else 3  # chrF is 0-100, ROUGE 0-1
    return f"{value:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def table(task: str, lines: list[tuple[tuple[float, float], dict, float]]) -> list[str]:
    if task == "summarize":
        rows = ["| frequency | presence | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-L vs 0/0 [95% paired bootstrap] | "
                "ends eos / stop / length | mean words | seconds |", "|---|---|---|---|---|---|---|---|---|"]
        for (f, p), out, seconds in lines:
            rows.append(f"| {f:g} | {p:g} | {out['rouge1']:.3f} | {out['rouge2']:.3f} | {out['rougeL']:.3f} | "
                        f"{_diff(out)} | {out['ends']} | {out['words']:.1f} | {seconds:.0f} |")
        return rows
    rows = ["| frequency | presence | chrF | BLEU | chrF vs 0/0 [95% paired bootstrap] | ends eos / stop / length | "
            "share at budget | wrong language | mean tokens | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (f, p), out, seconds in lines:
        rows.append(f"| {f:g} | {p:g} | {out['chrf']:.1f} | {out['bleu']:.1f} | {_diff(out)} | {out['ends']} | "
                    f"{out['length_share']:.0%} | {out['wrong']} | {out['tokens']:.1f} | {seconds:.0f} |")
    return rows


def environment(lm) -> str:
    return "\n".join([provenance.stamp(), provenance.machine(), provenance.versions(),
                      f"model: {lm.name} ({lm.placement.device}/{lm.placement.label}), greedy, the services' defaults "
                      f"(summarize --overflow chunk, translate budget 2 x source tokens + 16), auto batch size"])


def write_report(path: Path, args, sections: list[str], lm) -> None:
    head = (f"# presence / frequency penalties (generated tokens only) on summarize and translate, "
            f"{args.split} split (benchmarks/task_penalties.py {' '.join(sys.argv[1:])})\n\n"
            "Difference column: this setting minus the first row's (0/0, the default), with a 95% paired bootstrap "
            f"interval over the rows ({RESAMPLES} resamples): an interval that holds 0 is noise.\n")
    path.write_text(head + "\n" + "\n\n".join(sections) + "\n\n" + environment(lm) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated public sets")
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--grid", default=GRID, help="comma-separated frequency:presence; the first is the reference")
    parser.add_argument("--length", default="medium", help="summarize's --length (medium is its default)")
    parser.add_argument("--limit", type=int, default=None, help="rows per set (the first N)")
    parser.add_argument("--output", default=str(RESULT))
    parser.add_argument("--predictions", default=None, help="a folder for each setting's outputs (jsonl)")
    args = parser.parse_args()
    grid = parse_grid(args.grid)
    from gptcli.models.kinds import CAUSAL_LM, SEQ2SEQ

    lm = load_default_model("summarize", (CAUSAL_LM, SEQ2SEQ))
    sections: list[str] = []
    for name in args.sets.split(","):
        task, rows = SETS[name], read_rows(name, args.split, args.limit)
        run, score = (run_summarize, score_summarize) if task == "summarize" else (run_translate, score_translate)
        lines, reference = [], None
        for frequency, presence in grid:
            print(f"{task} {name} ({len(rows)} rows): frequency {frequency:g}, presence {presence:g} ...",
                  file=sys.stderr, flush=True)
            started = time.perf_counter()
            found = run(lm, rows, frequency, presence, args.length)
            seconds = time.perf_counter() - started
            out = score(rows, found, reference)
            reference = reference or out
            lines.append(((frequency, presence), out, seconds))
            if args.predictions:
                folder = Path(args.predictions)
                folder.mkdir(parents=True, exist_ok=True)
                with open(folder / f"{name}.{args.split}.f{frequency:g}.p{presence:g}.jsonl", "w",
                          encoding="utf-8") as file:
                    for row, fields in zip(rows, found):
                        file.write(json.dumps({**row, "output": fields}, ensure_ascii=False) + "\n")
            what = f"{task} --length {args.length}" if task == "summarize" else task
            section = [f"## {what} {name} {args.split} ({len(rows)} rows); baseline: {baseline(task, rows)}", "",
                       *table(task, lines)]
            print(section[-1], file=sys.stderr, flush=True)
            write_report(Path(args.output), args, [*sections, "\n".join(section)], lm)
        sections.append("\n".join(section))
    print(Path(args.output).read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
