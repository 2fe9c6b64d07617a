"""Tiny encoder-decoder models built in code (random weights, tokenizers trained here), saved to disk.

T5, BART, Marian (a SentencePiece model trained in the test), M2M100 and NLLB:
each loads through gptcli's real loader as a hub download of its kind would.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from tests import tiny_models

LAYERS = dict(encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
              encoder_ffn_dim=64, decoder_ffn_dim=64, d_model=32)


def train_spm(vocab_size: int = 200) -> bytes:
    """A unigram SentencePiece model trained on the tiny corpus (well under a second)."""
    import sentencepiece

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(tiny_models.corpus(300)), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", character_coverage=1.0, pad_id=-1, bos_id=-1, eos_id=-1, unk_id=0,
        hard_vocab_limit=False, minloglevel=2)
    return model.getvalue()


def _spm_pieces(spm_bytes: bytes) -> list[tuple[str, float]]:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)
    return [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]


def _seed_and_save(model, tokenizer, folder: Path, decoder_start: int) -> Path:
    model.generation_config.decoder_start_token_id = decoder_start
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    # Random weights often end at once; real checkpoints set a minimum length too (BART-cnn: 56).
    model.generation_config.min_new_tokens = 2
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_t5(folder: Path, context: int = 64) -> Path:
    """A T5 with the task prefixes of the original checkpoints (summarize:, translate English to German:)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    pieces = [(p, s) for p, s in _spm_pieces(train_spm()) if p != "<unk>"]
    tokenizer = T5Tokenizer(vocab=[("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + pieces, extra_ids=0,
                            model_max_length=context)
    tasks = {"summarization": {"prefix": "summarize: "},
             "translation_en_to_de": {"prefix": "translate English to German: "},
             "translation_en_to_fr": {"prefix": "translate English to French: "}}
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, task_specific_params=tasks)
    torch.manual_seed(0)
    return _seed_and_save(T5ForConditionalGeneration(config), tokenizer, folder, 0)


def build_bart(folder: Path, context: int = 64) -> Path:
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    tokenizer = tiny_models.train_tokenizer(chat=False)
    tokenizer.model_max_length = context
    config = BartConfig(vocab_size=len(tokenizer), max_position_embeddings=context, **LAYERS,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
                        forced_bos_token_id=None, forced_eos_token_id=None)
    torch.manual_seed(0)
    return _seed_and_save(BartForConditionalGeneration(config), tokenizer, folder, tokenizer.eos_token_id)


def build_marian(folder: Path, source: str | None = "en", target: str | None = "de",
                 target_tokens: tuple[str, ...] = ()) -> Path:
    """A Marian pair model (source→target), or a multi-target one choosing by ``>>xx<<`` tokens."""
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    spm = train_spm()
    for name in ("source.spm", "target.spm"):
        (folder / name).write_bytes(spm)
    pieces = ["</s>", "<unk>"] + list(target_tokens) + [p for p, _s in _spm_pieces(spm) if p != "<unk>"] + ["<pad>"]
    (folder / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(pieces)}))
    tokenizer = MarianTokenizer(str(folder / "source.spm"), str(folder / "target.spm"), str(folder / "vocab.json"),
                                source_lang=source, target_lang=target, model_max_length=64)
    pad = tokenizer.pad_token_id
    config = MarianConfig(vocab_size=len(pieces), max_position_embeddings=64, **LAYERS, pad_token_id=pad,
                          eos_token_id=0, decoder_start_token_id=pad, forced_eos_token_id=0)
    torch.manual_seed(0)
    return _seed_and_save(MarianMTModel(config), tokenizer, folder, pad)


def build_m2m100(folder: Path) -> Path:
    from transformers import M2M100Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    spm = train_spm()
    (folder / "spm.model").write_bytes(spm)
    pieces = ["<s>", "<pad>", "</s>", "<unk>"] + [p for p, _s in _spm_pieces(spm) if p != "<unk>"]
    (folder / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(pieces)}))
    tokenizer = M2M100Tokenizer(str(folder / "vocab.json"), str(folder / "spm.model"), model_max_length=64)
    return _m2m100_weights(folder, tokenizer)


def build_nllb(folder: Path) -> Path:
    """An NLLB-style model: M2M100 weights with NLLB's tokenizer and its eng_Latn-style codes."""
    from transformers import NllbTokenizer

    letters = sorted(set("".join(tiny_models.corpus(300))) - {" "})
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "▁": 4}
    for piece in letters + [f"▁{w}" for w in sorted(set(" ".join(tiny_models.corpus(300)).split()))]:
        vocab.setdefault(piece, len(vocab))
    tokenizer = NllbTokenizer(vocab=vocab, merges=[], model_max_length=64)
    return _m2m100_weights(folder, tokenizer)


def _m2m100_weights(folder: Path, tokenizer) -> Path:
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    # M2M100's language tokens sit after its vocabulary (and 8 spare ids) without counting in len().
    lang_ids = list(getattr(tokenizer, "lang_code_to_id", {}).values())
    size = max([len(tokenizer)] + [i + 1 + 8 for i in lang_ids])
    config = M2M100Config(vocab_size=size, max_position_embeddings=64, **LAYERS,
                          pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=tokenizer.eos_token_id,
                          decoder_start_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    return _seed_and_save(M2M100ForConditionalGeneration(config), tokenizer, folder, tokenizer.eos_token_id)


def long_llama(session_dir: Path) -> Path:
    """A tiny chat Llama with room for an instruction (512 tokens of context), built once per session."""
    folder = session_dir / "tasks-llama-512"
    if not (folder / "config.json").is_file():
        tiny_models.build_llama(folder, context=512)
    return folder
