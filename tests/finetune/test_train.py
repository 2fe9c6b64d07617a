"""Training end to end on tiny models: LoRA and full reduce the loss; the output loads in `generate`."""

from __future__ import annotations

import json

from tests.finetune.conftest import eval_losses, labelled_rows, metrics, write_jsonl

FAST = ("--batch-size", "8", "--max-length", "48", "--eval-every", "5", "--log-every", "5")


def test_lora_reduces_loss_and_output_loads_both_ways(cli, tiny_llama, chat_file, tmp_path):
    out = tmp_path / "lora"
    result = cli("finetune", "--data", chat_file, "--model", tiny_llama, "-o", out, "--max-steps", "15",
                 "--learning-rate", "5e-3", *FAST)
    assert result.exit_code == 0, result.stderr
    losses = eval_losses(out)
    assert losses[-1] < losses[0] - 0.3, losses
    assert "step 5/15: loss" in result.stderr and "eval at step 5" in result.stderr
    for name in ("adapter/adapter_config.json", "config.json", "model.safetensors", "tokenizer.json",
                 "chat_template.jinja", "metrics.jsonl", "loss.png", "README.md", "config.yaml"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    best = min(range(len(losses)), key=losses.__getitem__)
    assert f"weights of step {5 * best}" in card and "LoRA r=8" in card and str(tiny_llama) in card
    merged = cli("generate", "--model", out, "what is the cat?", "--max-new-tokens", "8")
    adapted = cli("generate", "--model", tiny_llama, "--adapter", out / "adapter", "what is the cat?",
                  "--max-new-tokens", "8")
    assert merged.exit_code == 0 and adapted.exit_code == 0, merged.stderr + adapted.stderr
    assert merged.stdout == adapted.stdout and merged.stdout.strip()
    base = cli("generate", "--model", tiny_llama, "what is the cat?", "--max-new-tokens", "8")
    assert base.stdout != merged.stdout  # the tuned model is a different model


def test_full_finetune_reduces_loss_and_keeps_the_best_step(cli, tiny_gpt2, completion_file, tmp_path):
    out = tmp_path / "full"
    result = cli("finetune", "--data", completion_file, "--model", tiny_gpt2, "-o", out, "--method", "full",
                 "--max-steps", "10", "--learning-rate", "3e-3", "--no-merge", *FAST)
    assert result.exit_code == 0, result.stderr
    losses = eval_losses(out)
    assert losses[-1] < losses[0] - 0.3, losses
    assert not (out / "adapter").exists() and (out / "model.safetensors").is_file()
    generated = cli("generate", "--model", out, "what is the cat?", "--raw", "--max-new-tokens", "6")
    assert generated.exit_code == 0, generated.stderr


def test_config_file_is_overridden_by_the_command_line(cli, tiny_gpt2, completion_file, tmp_path):
    import yaml

    config = tmp_path / "train.yaml"
    config.write_text(f"data: {completion_file}\nmodel: {tiny_gpt2}\nmax_steps: 2\nlora_r: 4\nbatch_size: 2\n")
    out = tmp_path / "cfg"
    result = cli("finetune", "--config", config, "--lora-r", "2", "-o", out, "--max-length", "32")
    assert result.exit_code == 0, result.stderr
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["lora_r"] == 2 and saved["max_steps"] == 2 and saved["batch_size"] == 2
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["r"] == 2
    assert len([m for m in metrics(out) if "loss" in m]) == 2


def test_classify_task_trains_a_head_with_the_labels(cli, word_bert, tmp_path):
    path = write_jsonl(tmp_path / "labels.jsonl", labelled_rows(80))
    out = tmp_path / "clf"
    result = cli("finetune", "--task", "classify", "--data", path, "--model", word_bert, "-o", out,
                 "--method", "full", "--max-steps", "25", "--learning-rate", "1e-2", *FAST)
    assert result.exit_code == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "bad", "1": "good"}
    accuracy = [m["eval_accuracy"] for m in metrics(out) if "eval_accuracy" in m]
    assert max(accuracy) >= 0.85 > accuracy[0], accuracy
    assert "accuracy" in (out / "README.md").read_text()


def test_output_folder_is_not_overwritten_and_4bit_needs_cuda(cli, tiny_gpt2, completion_file, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("mine")
    busy = cli("finetune", "--data", completion_file, "--model", tiny_gpt2, "-o", tmp_path / "busy")
    assert busy.exit_code == 2 and "not empty" in busy.stderr
    quant = cli("finetune", "--data", completion_file, "--model", tiny_gpt2, "--load-in-4bit", "-o", tmp_path / "q",
                "--device", "cpu")  # refused on the CPU, GPU or not
    assert quant.exit_code == 2 and "--load-in-4bit needs a CUDA GPU" in quant.stderr


def test_tuned_model_stops_with_eos_after_its_answer(cli, tiny_gpt2, tmp_path):
    # Every completion ends in EOS, which carries loss: the tuned model must end its answer there,
    # not run on to --max-new-tokens.
    rows = [{"prompt": "what is the cat?\n", "completion": "the cat is small."}] * 32
    data_file = write_jsonl(tmp_path / "stop.jsonl", rows)
    out = tmp_path / "stopper"
    result = cli("finetune", "--data", data_file, "--model", tiny_gpt2, "-o", out, "--method", "full",
                 "--max-steps", "30", "--learning-rate", "5e-3", "--eval-fraction", "0", "--batch-size", "8")
    assert result.exit_code == 0, result.stderr
    answer = cli("generate", "--model", out, "--raw", "--json", "--max-new-tokens", "40", "what is the cat?\n")
    record = json.loads(answer.stdout)
    assert record["finish_reason"] == "eos", record
    assert record["text"].strip() == "the cat is small."


def test_early_stopping_ends_the_run_and_keeps_the_best_weights(cli, tiny_gpt2, completion_file, tmp_path):
    out = tmp_path / "early"
    # A learning rate far too high: eval loss climbs after the first evals, so patience runs out.
    result = cli("finetune", "--data", completion_file, "--model", tiny_gpt2, "-o", out, "--method", "full",
                 "--max-steps", "40", "--learning-rate", "0.5", "--early-stopping-patience", "2",
                 "--eval-every", "2", "--batch-size", "8", "--max-length", "48")
    assert result.exit_code == 0, result.stderr
    assert "early stop" in result.stderr
    trained = [m["step"] for m in metrics(out) if "loss" in m]
    assert max(trained) < 40
    losses = eval_losses(out)
    best_step = 2 * min(range(len(losses)), key=losses.__getitem__)
    assert f"weights of step {best_step}" in (out / "README.md").read_text()
