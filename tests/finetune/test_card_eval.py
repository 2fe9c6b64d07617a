"""The model card's perplexity is `gptcli eval perplexity` on the output: same figures, its commands rerun them."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from tests.finetune.conftest import write_jsonl

FAST = ("--batch-size", "8", "--max-length", "48", "--eval-every", "5", "--log-every", "5")


def _card_rows(card: str) -> dict:
    """The Evaluation table: model name -> (rows, tokens, mean loss, perplexity)."""
    section = card.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    found = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 5 and cells[1].isdigit():
            found[cells[0]] = (int(cells[1]), int(cells[2]), float(cells[3]), float(cells[4]))
    return found


def _card_commands(card: str) -> list[list[str]]:
    """The `gptcli eval perplexity` commands the card gives, as argument lists (comments dropped)."""
    block = card.split("To measure it again:", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("#")[0])[1:] for line in block.strip().splitlines()]


def _rerun(cli, command: list[str]) -> dict:
    result = cli(*command, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _check_card_against_eval(cli, out, base_model) -> dict:
    card = (out / "README.md").read_text()
    rows = _card_rows(card)
    tuned, base = rows["this model"], rows["base, before training"]
    commands = _card_commands(card)
    assert commands[0][:4] == ["eval", "perplexity", "--model", str(out)] or "--adapter" in commands[0]
    assert ["--model", str(base_model)] == commands[1][2:4]
    for figures, command in ((tuned, commands[0]), (base, commands[1])):
        report = _rerun(cli, command)
        assert (report["count"], report["tokens"]) == figures[:2]
        assert report["mean_loss"] == pytest.approx(figures[2], abs=6e-5)  # the card rounds to 4 places
        assert report["perplexity"] == pytest.approx(figures[3], abs=6e-5 * max(1.0, figures[3]))
    assert tuned[1] == base[1] and tuned[2] < base[2] - 0.1  # same tokens; training lowered the loss
    return {"card": card, "tuned": tuned, "base": base}


def test_chat_card_reports_eval_perplexity_of_the_output_and_the_base(cli, tiny_llama, chat_file, tmp_path):
    out = tmp_path / "chat"
    result = cli("finetune", "--data", chat_file, "--model", tiny_llama, "-o", out, "--max-steps", "15",
                 "--learning-rate", "5e-3", *FAST)
    assert result.exit_code == 0, result.stderr
    checked = _check_card_against_eval(cli, out, tiny_llama)
    assert "assistant turns and the EOS" in checked["card"]
    assert len((out / "eval.jsonl").read_text().splitlines()) == checked["tuned"][0] == 4  # 10% of 40 rows


def test_adapter_only_card_gives_the_adapter_command(cli, tiny_gpt2, completion_file, tmp_path):
    out = tmp_path / "pc"
    result = cli("finetune", "--data", completion_file, "--model", tiny_gpt2, "-o", out, "--no-merge",
                 "--max-steps", "10", "--learning-rate", "1e-2", *FAST)
    assert result.exit_code == 0, result.stderr
    checked = _check_card_against_eval(cli, out, tiny_gpt2)
    assert f"--adapter {out}/adapter" in checked["card"] and "the prompt is context only" in checked["card"]


def test_completion_figure_is_the_models_own_loss_on_the_completion_and_its_eos(tiny_gpt2, tmp_path):
    import torch

    from gptcli.finetune import data as fmt
    from gptcli.finetune import evaluate, tokens
    from gptcli.models import LoadOptions, load_model
    from gptcli.models.kinds import CAUSAL_LM

    lm = load_model(LoadOptions(str(tiny_gpt2), dtype="float32"), accept=(CAUSAL_LM,), command="eval")
    rows = [fmt.Row(fmt.PROMPT_COMPLETION, {"prompt": p, "completion": c}, f"x:{i}")
            for i, (p, c) in enumerate([("what is the cat?\n", "the cat is small."), ("hello\n", "a dog")])]
    total, count = 0.0, 0
    for row in rows:
        example = tokens.tokenize(*tokens.render(row, lm.tokenizer), lm.tokenizer, row.where)
        assert example.labels[-1] == lm.tokenizer.eos_token_id  # the EOS counts
        labels = torch.tensor([example.labels])
        with torch.no_grad():
            loss = lm.model(input_ids=torch.tensor([example.input_ids]), labels=labels).loss.item()
        total, count = total + loss * example.loss_tokens, count + example.loss_tokens
    figures = evaluate.measure(lm, rows, batch_size=2)
    assert figures.tokens == count
    assert figures.mean_loss == pytest.approx(total / count, abs=1e-5)


def test_text_rows_are_scored_as_eval_perplexity_scores_text(cli, tiny_gpt2, tmp_path):
    texts = [f"the {w} is big and the {w} is red." for w in "cat dog sun moon tree river".split()] * 4
    data = write_jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in texts])
    out = tmp_path / "text"
    result = cli("finetune", "--data", data, "--model", tiny_gpt2, "-o", out, "--method", "full",
                 "--max-steps", "10", "--learning-rate", "3e-3", *FAST)
    assert result.exit_code == 0, result.stderr
    checked = _check_card_against_eval(cli, out, tiny_gpt2)
    assert "as `gptcli eval perplexity` scores any text" in checked["card"]
    assert re.search(r"Perplexity on the 2 eval rows", checked["card"])
