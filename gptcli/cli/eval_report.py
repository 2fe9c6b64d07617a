"""`gptcli eval`: the scores as a table on stdout (or one JSON object), and the confusion-matrix plot."""

from __future__ import annotations

from pathlib import Path

from gptcli.errors import UsageError

PLOT_SUFFIXES = (".png", ".pdf", ".svg")
ROUGE_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}


def show(report: dict, lines: list[str], json_output: bool) -> None:
    """``report`` as one JSON line with --json, else ``lines`` (the table)."""
    from gptcli import textio

    if json_output:
        textio.write_json_line(report)
    else:
        textio.write_stdout("\n".join(lines) + "\n")


def aligned(rows: list[list[str]], left: tuple[int, ...] = (0,)) -> list[str]:
    """Rows as columns: the ``left`` ones (names, text) left-aligned, the others right-aligned (numbers)."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) if column in left else cell.rjust(width)
                      for column, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]


def classify_lines(report) -> list[str]:
    summary = aligned([["records", str(report.count)], ["accuracy", f"{report.accuracy:.4f}"],
                       ["macro-F1", f"{report.macro_f1:.4f}"]])
    per_label = aligned([["label", "precision", "recall", "f1", "support"]] + [
        [label, f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", str(s.support)]
        for label, s in report.per_label.items()])
    matrix = aligned([["expected \\ predicted", *report.labels]] + [
        [label, *map(str, row)] for label, row in zip(report.labels, report.confusion)])
    return [*summary, "", *per_label, "", "confusion matrix (rows: expected, columns: predicted)", *matrix]


def summarize_lines(count: int, scores: dict) -> list[str]:
    lines = aligned([["records", str(count)]] + [[ROUGE_NAMES[name], f"{value:.4f}"]
                                                 for name, value in scores.items()])
    return lines + ["(rouge-score F-measure, Porter stemmer)"]


def translate_lines(count: int, chrf, bleu) -> list[str]:
    return aligned([["records", str(count), ""], ["chrF", f"{chrf.score:.2f}", chrf.signature],
                    ["BLEU", f"{bleu.score:.2f}", bleu.signature]], left=(0, 2))


def perplexity_lines(texts: int, tokens: int, loss: float, perplexity: float) -> list[str]:
    return aligned([["texts", str(texts)], ["tokens", str(tokens)], ["mean loss", f"{loss:.4f}"],
                    ["perplexity", f"{perplexity:.4f}"]])


def check_plot(plot: str, overwrite: bool) -> None:
    path = Path(plot).expanduser()
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"--plot {plot}: give a {', '.join(PLOT_SUFFIXES)} file name, e.g. confusion.png")
    if not path.parent.is_dir():
        raise UsageError(f"--plot {plot}: the folder {path.parent} does not exist; create it first")
    if path.is_dir() or (path.exists() and not overwrite):
        raise UsageError(f"--plot {plot} exists; give another name, or add --overwrite to replace it")


def plot_confusion(report, plot: str) -> None:
    """The confusion matrix as an image, written whole (a temporary file, then renamed)."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gptcli.errors import GptcliError

    size = max(4.0, 0.6 * len(report.labels) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    axes.imshow(report.confusion, cmap="Blues")  # each cell is labelled with its count below: no colour bar
    ticks = range(len(report.labels))
    axes.set_xticks(ticks, report.labels, rotation=45, ha="right")
    axes.set_yticks(ticks, report.labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("expected")
    axes.set_title(f"accuracy {report.accuracy:.3f} · macro-F1 {report.macro_f1:.3f}")
    top = max(max(row) for row in report.confusion) or 1
    for i, row in enumerate(report.confusion):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    figure.tight_layout()
    path = Path(plot).expanduser()
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        figure.savefig(temp)
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise GptcliError(f"cannot write --plot {plot}: {exc.strerror}; the scores above are complete") from None
    finally:
        plt.close(figure)
