"""Tokens: loss only on completions / assistant turns, EOS appended and learned, packing without leaks."""

from __future__ import annotations

import pytest

from gptcli.finetune import data, tokens
from gptcli.finetune.tokens import IGNORE
from tests.finetune.conftest import write_jsonl


@pytest.fixture(scope="module")
def llama_tok(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def gpt2_tok(tiny_gpt2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_gpt2)


def encode(rows, tokenizer, max_length=128, train_on_prompt=False):
    return tokens.encode_rows(rows, tokenizer, max_length, train_on_prompt)


def test_labels_ignore_exactly_the_prompt_tokens(gpt2_tok):
    prompt, completion = "what is the cat?\n", "the cat sat on a mat."
    row = data.Row(data.PROMPT_COMPLETION, {"prompt": prompt, "completion": completion}, "f:1")
    example = encode([row], gpt2_tok).examples[0]
    n_prompt = len(gpt2_tok(prompt)["input_ids"])
    assert example.labels[:n_prompt] == [IGNORE] * n_prompt
    assert example.labels[n_prompt:] == example.input_ids[n_prompt:]
    assert gpt2_tok.decode(example.input_ids[n_prompt:-1]) == completion


def test_eos_appended_and_carries_loss(gpt2_tok):
    example = encode([data.Row(data.TEXT, {"text": "the sun and the moon."}, "f:1")], gpt2_tok).examples[0]
    assert example.input_ids[-1] == gpt2_tok.eos_token_id and example.labels[-1] == gpt2_tok.eos_token_id
    assert example.input_ids.count(gpt2_tok.eos_token_id) == 1


def test_chat_loss_only_on_assistant_turns_which_end_in_eos(llama_tok):
    messages = [{"role": "user", "content": "what is the sun?"}, {"role": "assistant", "content": "a big star."},
                {"role": "user", "content": "and the moon?"}, {"role": "assistant", "content": "a small rock."}]
    example = encode([data.Row(data.MESSAGES, {"messages": messages}, "f:1")], llama_tok).examples[0]
    learned = llama_tok.decode([t for t, l in zip(example.input_ids, example.labels) if l != IGNORE])
    assert learned == "a big star.<|im_end|>\na small rock.<|im_end|>"
    assert example.input_ids[-1] == llama_tok.eos_token_id == example.labels[-1]
    all_on = encode([data.Row(data.MESSAGES, {"messages": messages}, "f:1")], llama_tok, train_on_prompt=True)
    assert all_on.examples[0].labels[1:] == all_on.examples[0].input_ids[1:]


def test_instruction_rows_use_the_chat_template_when_there_is_one(llama_tok, gpt2_tok):
    row = data.Row(data.INSTRUCTION, {"instruction": "name a colour", "input": "", "output": "blue"}, "f:1")
    for tokenizer, tail in ((llama_tok, "blue<|im_end|>"), (gpt2_tok, "blue<|endoftext|>")):
        example = encode([row], tokenizer).examples[0]
        assert tokenizer.decode([t for t, l in zip(example.input_ids, example.labels) if l != IGNORE]) == tail


def test_max_length_cuts_and_counts(gpt2_tok):
    rows = [data.Row(data.TEXT, {"text": "the cat " * 40}, "f:1"), data.Row(data.TEXT, {"text": "hi"}, "f:2")]
    encoded = encode(rows, gpt2_tok, max_length=16)
    assert encoded.cut == 1 and len(encoded.examples[0].input_ids) == 16 and encoded.examples[0].cut


def test_packing_restarts_positions_and_blocks_attention(tiny_llama, tiny_gpt2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for folder in (tiny_llama, tiny_gpt2):
        tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
        rows = [data.Row(data.TEXT, {"text": t}, f"f:{i}") for i, t in enumerate(["the cat sat.", "a red house by the river."])]
        first, second = encode(rows, tokenizer).examples
        packed = tokens.pack([first, second], 64)
        assert len(packed) == 1
        row = packed[0]
        assert row.position_ids == list(range(len(first.input_ids))) + list(range(len(second.input_ids)))
        assert row.labels[len(first.input_ids)] == IGNORE  # never predict the next example from the last one
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([second.input_ids])).logits[0]
            inside = model(input_ids=torch.tensor([row.input_ids]), position_ids=torch.tensor([row.position_ids]),
                           use_cache=False).logits[0, len(first.input_ids):]
        assert torch.allclose(alone, inside, atol=1e-4), folder


def test_pack_respects_max_length(gpt2_tok):
    rows = [data.Row(data.TEXT, {"text": "the cat sat on a mat."}, f"f:{i}") for i in range(10)]
    examples = encode(rows, gpt2_tok).examples
    packed = tokens.pack(examples, 3 * len(examples[0].input_ids))
    assert [len(p.input_ids) for p in packed] == [3 * len(examples[0].input_ids)] * 3 + [len(examples[0].input_ids)]


def test_inspect_marks_loss_tokens_and_trains_nothing(cli, tiny_llama, tmp_path, chat_file):
    long_row = {"messages": [{"role": "user", "content": "the cat " * 60}, {"role": "assistant", "content": "ok"}]}
    path = write_jsonl(tmp_path / "c.jsonl", [long_row] + [long_row] * 2)
    result = cli("finetune", "--data", chat_file, "--model", tiny_llama, "--inspect", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("--- example 1 (") and result.stdout.count("--- example") == 3
    assert "<|im_start|>user\nwhat is the" in result.stdout and " is big and red.<|im_end|>]]" in result.stdout
    assert not (tmp_path / "out").exists()
    cut = cli("finetune", "--data", path, "--model", tiny_llama, "--inspect", "--max-length", "32")
    assert cut.exit_code == 0 and "3 training rows were longer than --max-length 32" in cut.stderr


def test_training_loss_is_transformers_own_shifted_loss(tiny_llama):
    """The loop's summed loss equals the model's own (mean) causal-LM loss times the tokens it counts."""
    from types import SimpleNamespace

    import torch

    from gptcli.finetune.loop import Trainer
    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM

    lm = load_model(LoadOptions(str(tiny_llama), dtype="float32"), accept=(CAUSAL_LM,), command="finetune")
    ids = torch.tensor([[5, 17, 33, 41, 8, 9], [12, 7, 19, 3, 0, 0]])
    labels = torch.tensor([[IGNORE, IGNORE, 33, 41, 8, 9], [IGNORE, 7, 19, 3, IGNORE, IGNORE]])
    batch = {"inputs": {"input_ids": ids, "attention_mask": (labels != IGNORE) | (ids != 0)}, "labels": labels}
    loop = SimpleNamespace(accelerator=SimpleNamespace(device=torch.device("cpu")), model=lm.model, classify=False)
    with torch.no_grad():
        ours, _ = Trainer._loss(loop, batch)
        reference = lm.model(**batch["inputs"], labels=labels).loss
    counted = int((labels[:, 1:] != IGNORE).sum())
    assert ours.item() == pytest.approx(reference.item() * counted, rel=1e-5)
