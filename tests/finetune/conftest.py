"""Data files for the finetune tests, written in code (small, learnable patterns)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

WORDS = "cat dog sun moon tree river city house".split()
GOOD, BAD = ["great", "lovely", "happy", "fine"], ["awful", "sad", "broken", "poor"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def chat_rows(count: int = 40, seed: int = 0) -> list[dict]:
    """Questions whose answer is a fixed function of the question: quick to learn."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        word = rng.choice(WORDS)
        rows.append({"messages": [{"role": "user", "content": f"what is the {word}?"},
                                  {"role": "assistant", "content": f"the {word} is big and red."}]})
    return rows


def completion_rows(count: int = 40, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": f"what is the {w}?\n", "completion": f"the {w} is small."}
            for w in (rng.choice(WORDS) for _ in range(count))]


def labelled_rows(count: int = 60, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(["good", "bad"])
        words = [rng.choice(GOOD if label == "good" else BAD) for _ in range(3)] + [rng.choice(WORDS)]
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture
def chat_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", chat_rows())


@pytest.fixture
def completion_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "pc.jsonl", completion_rows())


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def eval_losses(out: Path) -> list[float]:
    return [m["eval_loss"] for m in metrics(out) if "eval_loss" in m]


@pytest.fixture(scope="session")
def word_bert(session_dir) -> Path:
    """A tiny BERT whose tokenizer knows WORDS and the label words (GOOD, BAD), so a
    classification head can learn them; the shared tiny BERT knows other words."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = session_dir / "word-bert"
    if folder.exists():
        return folder
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS + GOOD + BAD))
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)  # its 2-label head is replaced by finetune
    tokenizer.save_pretrained(folder)
    return folder
