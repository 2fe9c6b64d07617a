"""Tiny models for classify tests, built in code: an NLI classifier, an embedding model, and a
causal LM trained here so that its label preferences are known."""

from __future__ import annotations

import random
from pathlib import Path

from tests import tiny_models

NLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
KEYWORD_ANSWERS = {"sun": "day", "moon": "night"}  # texts with these words are trained to these labels
MIXED_WORD = "river"  # texts with it: "day" 75% of the time, "night" 25%
LEARNING_RATE = 3e-3
TINY_PROMPT = "{text}"  # the tiny BPE spells the default prompt in ~100 tokens: keep training cheap
FILLER = [w for w in tiny_models._WORDS if w not in {"sun", "moon", "river", "day", "night"}]


def _bert_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "."] + sorted(set(tiny_models._WORDS) | {"this", "example"})
    # transformers 5 takes the vocabulary itself (vocab=), and ignores a vocab_file= argument.
    return BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)})


def build_nli(folder: Path) -> Path:
    """A BERT classifier whose labels are entailment / neutral / contradiction (random weights)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _bert_tokenizer(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, initializer_range=0.5, num_labels=3,
                        id2label=NLI_LABELS, label2id={v: k for k, v in NLI_LABELS.items()})
    torch.manual_seed(3)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_multi_label_bert(folder: Path) -> Path:
    """A BERT classifier configured for multi-label classification (sigmoid scores)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _bert_tokenizer(folder)
    names = {0: "animals", 1: "weather", 2: "places"}
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, initializer_range=0.5, num_labels=3, id2label=names,
                        label2id={v: k for k, v in names.items()}, problem_type="multi_label_classification")
    torch.manual_seed(4)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_embedding(folder: Path) -> Path:
    """A bare BertModel (no head): the loader sees an embedding model, as with all-MiniLM."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = _bert_tokenizer(folder)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, initializer_range=0.5, architectures=["BertModel"])
    torch.manual_seed(5)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def keyword_text(rng: random.Random, word: str | None) -> str:
    words = [rng.choice(FILLER) for _ in range(rng.randint(1, 4))]
    if word is not None:
        words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


def build_trained_llama(folder: Path, steps: int = 150) -> Path:
    """A tiny Llama trained to answer the classify prompt with labels day/night.

    Known preferences: "sun" texts -> day, "moon" texts -> night, texts with no
    keyword (the content-free inputs too) -> day, "river" texts -> day 75% / night 25%.
    On "river" texts the raw scores prefer day; calibration (subtracting the
    content-free scores, where night is very unlikely) turns that into night.
    """
    import torch

    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM
    from gptcli.services.classify import ClassifyParams
    from gptcli.services.classify_lm import LabelScorer

    # A larger vocabulary makes the labels single tokens, so the trained odds show in the scores
    # as they are (with 300 tokens " night" is 5 tokens, and length normalisation dilutes them).
    tiny_models.build_llama(folder, seed=7, vocab_size=1000)
    # Trained on the CPU whatever the machine: the same weights, so the same known preferences.
    lm = load_model(LoadOptions(str(folder), device="cpu", dtype="float32"), accept=(CAUSAL_LM,), command="test")
    scorer = LabelScorer(lm, ("day", "night"), ClassifyParams(labels=("day", "night"), prompt=TINY_PROMPT))
    answers = dict(zip(scorer.labels, scorer.label_ids))
    rng = random.Random(0)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(lm.model.parameters(), lr=LEARNING_RATE)
    lm.model.train()
    for _step in range(steps):
        batch = [_example(rng, scorer, answers) for _ in range(16)]
        loss = _answer_loss(lm.model, batch, lm.tokenizer.pad_token_id)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    lm.model.eval()
    lm.model.save_pretrained(folder)
    return folder


def _example(rng: random.Random, scorer, answers: dict) -> tuple[list[int], list[int]]:
    kind = rng.choice(["sun", "moon", "sun", "moon", "river", "river", None])
    if kind is None:
        label, text = "day", rng.choice(["N/A", "", "[MASK]", keyword_text(rng, None)])
    elif kind == MIXED_WORD:
        label, text = ("day" if rng.random() < 0.75 else "night"), keyword_text(rng, kind)
    else:
        label, text = KEYWORD_ANSWERS[kind], keyword_text(rng, kind)
    return scorer.prompt_ids(text, "training text"), answers[label]


def _answer_loss(model, batch, pad_id: int):
    """Cross-entropy on the answer tokens only, over a right-padded batch."""
    import torch

    width = max(len(p) + len(a) for p, a in batch)
    ids = torch.full((len(batch), width), pad_id)
    labels = torch.full((len(batch), width), -100)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (prompt, answer) in enumerate(batch):
        ids[r, :len(prompt) + len(answer)] = torch.tensor(prompt + answer)
        labels[r, len(prompt):len(prompt) + len(answer)] = torch.tensor(answer)
        mask[r, :len(prompt) + len(answer)] = 1
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def built_once(folder: Path, builder) -> Path:
    """Build a model folder once per session, whichever test module asks first."""
    if not (folder / "config.json").is_file():
        builder(folder)
    return folder


def build_t5(folder: Path) -> Path:
    """A tiny encoder-decoder, for the error classify gives on one."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = tiny_models.train_tokenizer(chat=False)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=8, num_layers=1, num_heads=2,
                      decoder_start_token_id=tokenizer.pad_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(6)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
