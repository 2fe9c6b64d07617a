"""Rebuild the public evaluation samples in this folder from page dumps.

The samples were read page by page (16,000 characters a page) from public
GitHub repositories with a file-lookup tool; each page's complete lines were
saved, unchanged, under a raw folder named after the source file and the
character offset the page started at (the partial first and last line of a
page are dropped).  This script turns those dumps into the jsonl files here,
so every choice made after reading (which rows, which split, which fields) is
written down in code rather than done by hand.  SOURCE.md in each folder says
where each dump came from (repository, path, commit).

Usage: python build_samples.py [RAW_DIR]   (default: raw/ here; writes next to this file)
"""

import csv
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 12


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def normalised(text):
    # SST tokenises ("it 's", ". . .") differently from its source corpus;
    # comparing letters and digits only finds the same sentence either way.
    return re.sub(r"[^a-z0-9]", "", text.lower())


def read_lines(path):
    return [line.rstrip("\n") for line in open(path, encoding="utf-8") if line.strip()]


# --- classify: binary sentiment -------------------------------------------

def build_sst2(raw):
    label_names = {"1": "positive", "0": "negative"}
    test = []
    for name in ("sst2_dev_32000.txt", "sst2_dev_48000.txt"):
        for line in read_lines(raw / name):
            label, text = line.split(" ", 1)
            test.append({"text": text.strip(), "label": label_names[label]})
    # Tuning rows come from the corpus SST was built from (Pang & Lee's
    # rotten-tomatoes snippets), minus any snippet that is one of our test rows.
    held_out = {normalised(row["text"]) for row in test}
    train = []
    for name, label in (("mr_pos_450000.txt", "positive"), ("mr_neg_400179.txt", "negative")):
        kept = [t.strip() for t in read_lines(raw / name) if normalised(t) not in held_out]
        train += [{"text": t, "label": label} for t in kept[:100]]
    random.Random(SEED).shuffle(train)
    return train, test


def unquote_csv_style(text):
    # These copies wrap sentences that contain commas or quotes in "..." and
    # double the inner quotes, as a CSV writer does; undo exactly that.
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    return text.strip()


def build_uci(raw):
    label_names = {"1": "positive", "0": "negative"}
    train, test = [], []
    for source, name in (("amazon", "uci_amazon_0.txt"), ("yelp", "uci_yelp_24559.txt"),
                         ("imdb", "uci_imdb_16000.txt")):
        rows = []
        for line in read_lines(raw / name):
            text, label = line.rsplit("\t", 1)
            rows.append({"text": unquote_csv_style(text), "label": label_names[label.strip()],
                         "source": source})
        random.Random(SEED).shuffle(rows)
        train += rows[:50]
        test += rows[50:]
    return train, test


# --- classify: topics -------------------------------------------------------

AG_LABELS = {"1": "world", "2": "sports", "3": "business", "4": "technology"}


def read_ag(path):
    rows, seen = [], set()
    with open(path, encoding="utf-8", newline="") as handle:
        for label, title, description in csv.reader(handle):
            text = f"{title.strip()} {description.strip()}".strip()
            if text in seen:
                continue
            seen.add(text)
            rows.append({"text": text, "label": AG_LABELS[label]})
    return rows


def build_ag(raw):
    train = read_ag(raw / "ag_train_523574.csv")
    test = read_ag(raw / "ag_test_224035.csv") + read_ag(raw / "ag_test_1291590.csv")
    return train, test


def read_dbpedia(paths):
    rows = []
    for path in paths:
        for line in read_lines(path):
            record = json.loads(line)
            rows.append({"text": record["content"].strip(), "label": record["label"]})
    return rows


def build_dbpedia(raw):
    train = read_dbpedia([raw / "dbpedia_train0_0.jsonl"])
    test = read_dbpedia([raw / "dbpedia_test_0.jsonl", raw / "dbpedia_test_16000.jsonl"])
    return train, test


# --- translate ------------------------------------------------------------

def repair_mojibake(text):
    # A few English originals carry UTF-8 read as cp1252 ("Â£46.6m", "â‚¬1.3730");
    # re-encoding restores the pound and euro signs and leaves clean text alone.
    if "Â" not in text and "â" not in text:
        return text
    try:
        return text.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


WMT16_ENFI_TEST = ["news.com.au.655807", "dailymail.co.uk.117669", "timemagazine.42715",
                   "news.com.au.655831", "guardian.80586"]
WMT16_ENFI_TRAIN = ["bbc.184506", "abcnews.151477"]


def read_enfi_doc(raw, doc):
    english = read_lines(raw / "wmt16_enfi" / f"{doc}.en")
    finnish = read_lines(raw / "wmt16_enfi" / f"{doc}.fi")
    assert len(english) == len(finnish), f"{doc}: {len(english)} English lines, {len(finnish)} Finnish"
    return [{"text": repair_mojibake(en.strip()), "translation": fi.strip(), "to": "fi", "doc": doc}
            for en, fi in zip(english, finnish)]


def build_wmt16_enfi(raw):
    train = [row for doc in WMT16_ENFI_TRAIN if (raw / "wmt16_enfi" / f"{doc}.en").exists()
             for row in read_enfi_doc(raw, doc)]
    test = [row for doc in WMT16_ENFI_TEST for row in read_enfi_doc(raw, doc)]
    return train, test


def read_tatoeba(path):
    # The file lists one row per (English, Romanian) pair, several rows for an
    # English sentence with more than one translation: keep the first as the
    # reference and the others as alternatives.
    rows, by_text = [], {}
    for line in read_lines(path):
        english, romanian = (part.strip() for part in line.split("\t"))
        if english in by_text:
            by_text[english].setdefault("alternatives", []).append(romanian)
            continue
        by_text[english] = {"text": english, "translation": romanian, "to": "ro"}
        rows.append(by_text[english])
    return rows


def build_tatoeba_enro(raw):
    train = read_tatoeba(raw / "tatoeba_eng_ron_dev_0.tsv")
    test = read_tatoeba(raw / "tatoeba_eng_ron_test_337331.tsv")
    return train, test


# --- summarize --------------------------------------------------------------

def read_xsum(paths):
    rows = []
    for path in paths:
        for line in read_lines(path):
            record = json.loads(line)
            # Parts of these copies carry UTF-8 read as cp1252 ("\u00c2\u00a3500m"
            # for "£500m"); repair line by line, which leaves clean lines alone.
            document = "\n".join(repair_mojibake(part) for part in record["document"].split("\n"))
            rows.append({"text": document.strip(), "summary": repair_mojibake(record["summary"]).strip()})
    return rows


def build_xsum(raw):
    train = read_xsum([raw / "xsum_fixture_sample.jsonl"])
    test = read_xsum([raw / f"xsum_test_{offset}.jsonl" for offset in (1149441, 1165441, 1181441, 1197441)])
    return train, test


# --- summarize: news headlines (Gigaword sample shipped with TensorFlow textsum) -------------

_PTB = {"-lrb-": "(", "-rrb-": ")", "``": '"', "''": '"'}


def _untag(field):
    sentences = re.findall(r"<s> (.*?) </s>", field)
    words = " ".join(sentences).split()
    return " ".join(_PTB.get(word, word) for word in words)


def read_textsum(path):
    """textsum's toy text format: tab-separated key=value fields per line (abstract, article, publisher)."""
    rows = []
    for line in read_lines(path):
        fields = dict(part.split("=", 1) for part in line.split("\t"))
        summary = _untag(fields["abstract"]).rstrip(" .")
        rows.append({"text": _untag(fields["article"]), "summary": summary})
    return rows


def build_gigaword_textsum(raw):
    # 21 articles in file order: the first 8 for tuning, the other 13 held out (too few to shuffle usefully).
    rows = read_textsum(raw / "textsum_toy_text_data_0.txt")
    return rows[:8], rows[8:]


BUILDERS = {
    "sst2": build_sst2,
    "uci_reviews": build_uci,
    "ag_news": build_ag,
    "dbpedia14": build_dbpedia,
    "wmt16_en_fi": build_wmt16_enfi,
    "tatoeba_en_ro": build_tatoeba_enro,
    "xsum": build_xsum,
    "gigaword_textsum": build_gigaword_textsum,
}


def check(name, split, rows):
    assert rows, f"{name}/{split} is empty"
    for row in rows:
        for key, value in row.items():
            for item in value if isinstance(value, list) else [value]:
                assert isinstance(item, str) and item.strip(), f"{name}/{split}: empty {key}"
                item.encode("utf-8")
    labels = Counter(row["label"] for row in rows) if "label" in rows[0] else None
    return f"{name}/{split}: {len(rows)} rows" + (f", labels {dict(labels)}" if labels else "")


def main():
    raw = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "raw"
    for name, build in BUILDERS.items():
        if not all((raw / n).exists() for n in getattr(build, "needs", [])):
            continue
        train, test = build(raw)
        overlap = {r["text"] for r in train} & {r["text"] for r in test}
        assert not overlap, f"{name}: {len(overlap)} rows in both splits"
        for split, rows in (("train", train), ("test", test)):
            print(check(name, split, rows))
            write_jsonl(HERE / name / f"{split}.jsonl", rows)


if __name__ == "__main__":
    main()
