"""Tiny real models built in code: a BPE tokenizer trained here, random weights, saved to disk.

They load through gptcli's real loader like any model folder would.
"""

from __future__ import annotations

import random
from pathlib import Path

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_WORDS = ("the cat dog sat on a mat and ran to big small red blue house tree river city paris france "
          "capital what is of in it was day night sun moon one two three four five hello world model "
          "text token write poem about sea short long answer question please summarize translate").split()


def corpus(lines: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 14))) + rng.choice([".", "?", "!"])
            for _ in range(lines)]


def train_tokenizer(chat: bool, vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    eos = "<|im_end|>" if chat else "<|endoftext|>"
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token="<|endoftext|>",
                                   pad_token="<pad>", model_max_length=128)
    if chat:
        fast.chat_template = CHATML
    return fast


def build_llama(folder: Path, seed: int = 0, context: int = 128, vocab_size: int = 300,
                never_ends: bool = False) -> Path:
    """A 2-layer Llama with a chat template (like the default model, but tiny).

    ``never_ends``: EOS is never sampled, so every reply runs to its token budget (a test that
    interrupts a reply needs one that cannot end on its own first)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(chat=True, vocab_size=vocab_size)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if never_ends:
        _never_sample_eos(model, tokenizer.eos_token_id)
    _save(model, tokenizer, folder)
    return folder


def _never_sample_eos(model, eos_id: int) -> None:
    """Hidden dimension 0 holds a constant 10 from every embedding, and no layer writes to it, so
    after the final norm it is always positive; EOS's output row reads only that dimension, with a
    large negative weight: its logit is about -800 whatever the input."""
    import torch

    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 10.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        model.lm_head.weight[eos_id, :] = 0.0
        model.lm_head.weight[eos_id, 0] = -100.0


def build_gpt2(folder: Path, seed: int = 1, always_eos: bool = False) -> Path:
    """A 2-layer GPT-2 without a chat template. ``always_eos``: its first token is always EOS."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = train_tokenizer(chat=False)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    if always_eos:
        with torch.no_grad():
            # A constant final hidden state whose projection is largest on EOS, whatever the input.
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.fill_(1.0)
            model.lm_head.weight.zero_()
            model.lm_head.weight[tokenizer.eos_token_id].fill_(1.0)
    _save(model, tokenizer, folder)
    return folder


def build_bert_classifier(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(_WORDS))
    # transformers 5 ignores vocab_file= here and would map every word to [UNK]: pass the vocabulary.
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(tokens)})
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    torch.manual_seed(0)
    _save(BertForSequenceClassification(config), tokenizer, folder)
    return folder


def _save(model, tokenizer, folder: Path) -> None:
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
