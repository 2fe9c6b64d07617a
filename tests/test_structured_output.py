"""--json-schema, --json-object, --regex and --choice on a random tiny model: every output parses
and validates, at temperature 1, with batching, -n, seeds and streaming as without them."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["red", "green", "blue"]}, "maxItems": 3},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 6},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["zip"], "additionalProperties": False},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "member": {"type": "boolean"},
        "nickname": {"anyOf": [{"type": "string", "maxLength": 4}, {"type": "null"}]},
    },
    "required": ["name", "age", "address"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def roomy_llama(tmp_path_factory) -> str:
    """A random tiny Llama with room for a few hundred tokens of JSON after the prompt."""
    from tests import tiny_models

    return str(tiny_models.build_llama(tmp_path_factory.mktemp("structured") / "roomy-llama", seed=3, context=512))


def _records(result) -> list[dict]:
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _generate(cli, model, *args, prompt="describe a person"):
    return cli("generate", prompt, "-m", model, "--dtype", "float32", *args)


def test_every_sample_at_temperature_1_validates_against_a_nested_schema(cli, roomy_llama, tmp_path):
    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(PERSON))
    records = _records(_generate(cli, roomy_llama, "--json-schema", schema, "--temperature", 1, "--seed", 7,
                                 "-n", 24, "--max-new-tokens", 400, "--json"))
    assert len(records) == 24
    seen_keys = set()
    for record in records:
        assert record["finish_reason"] == "stop", record
        value = json.loads(record["text"])
        jsonschema.validate(value, PERSON)
        seen_keys |= set(value)
    assert {"tags", "score", "member"} & seen_keys  # optional fields do appear: the grammar offers them
    # A random model unconstrained writes no JSON at all: the constraint did the work.
    free = _records(_generate(cli, roomy_llama, "--temperature", 1, "--seed", 7, "-n", 4, "--max-new-tokens", 40,
                              "--json"))
    assert not any(_parses(r["text"]) for r in free)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


# Keywords the grammar engine accepts, each checked for being enforced and not only accepted.
KEYWORDS = {
    "oneOf": {"oneOf": [{"type": "string", "maxLength": 3}, {"type": "integer", "minimum": 0, "maximum": 9}]},
    "ref": {"$defs": {"p": {"type": "object", "properties": {"a": {"type": "integer", "maximum": 9, "minimum": 0}},
                            "required": ["a"], "additionalProperties": False}},
            "type": "object", "properties": {"x": {"$ref": "#/$defs/p"}}, "required": ["x"],
            "additionalProperties": False},
    "minItems": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "minItems": 2,
                 "maxItems": 3},
    "format": {"type": "string", "format": "date"},
    "exclusiveMinimum": {"type": "number", "exclusiveMinimum": 0, "maximum": 5},
    "multipleOf": {"type": "integer", "multipleOf": 3, "minimum": -99, "maximum": 99},
    "prefixItems": {"type": "array", "prefixItems": [{"type": "integer", "minimum": 0, "maximum": 9},
                                                     {"type": "string", "maxLength": 3}], "items": False},
    "const": {"type": "object", "properties": {"v": {"const": "1.0"}, "k": {"enum": [1, "one", None]}},
              "required": ["v", "k"], "additionalProperties": False},
}


def test_each_accepted_keyword_is_enforced_not_only_accepted(cli, roomy_llama, tmp_path):
    batch = tmp_path / "keywords.jsonl"
    batch.write_text("".join(json.dumps({"id": name, "prompt": "x", "schema": schema}) + "\n"
                             for name, schema in KEYWORDS.items()))
    records = _records(cli("generate", "-m", roomy_llama, "--dtype", "float32", "--input", batch, "--temperature", 1,
                           "--seed", 9, "-n", 4, "--max-new-tokens", 200, "--json"))
    assert len(records) == 4 * len(KEYWORDS)
    for record in records:
        assert record["finish_reason"] in ("stop", "eos"), record  # a number may go on, so EOS can end it
        schema = KEYWORDS[record["id"]]
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(
            json.loads(record["text"]))


def test_batching_seeds_and_streaming_are_unchanged_by_a_constraint(cli, roomy_llama, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a person\nsomeone tall\nan old friend from the river\nx\n")
    common = ("--json-object", "--temperature", 1, "--seed", 5, "--max-new-tokens", 60, "--json")
    batched = _records(cli("generate", "-m", roomy_llama, "--dtype", "float32", "--input", prompts,
                           "--batch-size", 4, *common))
    alone = _records(cli("generate", "-m", roomy_llama, "--dtype", "float32", "--input", prompts,
                         "--batch-size", 1, *common))
    assert [r["text"] for r in batched] == [r["text"] for r in alone]
    assert all(isinstance(json.loads(r["text"]), dict) for r in batched if r["finish_reason"] == "stop")
    streamed = _generate(cli, roomy_llama, "--json-object", "--temperature", 1, "--seed", 5, "--max-new-tokens", 60,
                         prompt="a person")
    assert streamed.exit_code == 0, streamed.stderr
    assert streamed.stdout.rstrip("\n") == batched[0]["text"]


def test_regex_and_choice_outputs_match_whole(cli, roomy_llama):
    phones = _records(_generate(cli, roomy_llama, "--regex", r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}", "--temperature", 1,
                                "--seed", 1, "-n", 8, "--json"))
    assert all(re.fullmatch(r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}", r["text"]) for r in phones)
    choices = ["yes", "no", "not sure, ask again", "a/b (c)"]
    picked = _records(_generate(cli, roomy_llama, "--choice", "yes,no", "--choice", r"not sure\, ask again",
                                "--choice", "a/b (c)", "--temperature", 1, "--seed", 2, "-n", 24, "--json"))
    # "no" may end by EOS: it is also the start of "not sure...", so the grammar lets it go on.
    assert all(r["text"] in choices and r["finish_reason"] in ("stop", "eos") for r in picked)
    assert len({r["text"] for r in picked}) > 1  # sampled among the choices, not stuck on one


def test_per_record_schema_constrains_only_its_record(cli, roomy_llama, tmp_path):
    small = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
             "additionalProperties": False}
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"prompt": "free text"}) + "\n" + json.dumps({"prompt": "json", "schema": small}) + "\n")
    records = _records(cli("generate", "-m", roomy_llama, "--dtype", "float32", "--input", batch,
                           "--max-new-tokens", 30, "--json"))
    free_alone = _records(_generate(cli, roomy_llama, "--max-new-tokens", 30, "--json", prompt="free text"))
    assert records[0]["text"] == free_alone[0]["text"]  # the unconstrained row is untouched by its neighbour
    jsonschema.validate(json.loads(records[1]["text"]), small)


def test_openai_batch_lines_take_response_format(cli, roomy_llama, tmp_path):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["n"], "additionalProperties": False}
    lines = [{"custom_id": "a", "url": "/v1/chat/completions",
              "body": {"messages": [{"role": "user", "content": "a number"}], "max_tokens": 40,
                       "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema,
                                                                                  "strict": True}}}},
             {"custom_id": "b", "url": "/v1/chat/completions",
              "body": {"messages": [{"role": "user", "content": "anything"}], "max_tokens": 40,
                       "response_format": {"type": "json_object"}}}]
    batch = tmp_path / "openai.jsonl"
    batch.write_text("".join(json.dumps(line) + "\n" for line in lines))
    results = _records(cli("generate", "-m", roomy_llama, "--dtype", "float32", "--input", batch,
                           "--output-format", "openai-batch"))
    contents = {r["custom_id"]: r["response"]["body"]["choices"][0]["message"]["content"] for r in results}
    jsonschema.validate(json.loads(contents["a"]), schema)
    assert isinstance(json.loads(contents["b"]), dict)


def test_a_budget_too_small_says_the_output_is_incomplete(cli, roomy_llama):
    result = _generate(cli, roomy_llama, "--json-schema", json.dumps(PERSON), "--max-new-tokens", 3, "--json")
    record = _records(result)[0]
    assert record["finish_reason"] == "length" and not _parses(record["text"])
    assert "do not parse" in result.stderr and "--max-new-tokens" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--json-schema", '{"type": "array", "uniqueItems": true}'], '["uniqueItems"]'),
    (["--json-schema", '{"type": "object", "not": {}}'], '["not"]'),
    (["--json-schema", '{"type": "strin"}'], "Invalid type: strin"),
    (["--json-schema", '{"type": "object",'], "not valid JSON"),
    (["--json-schema", "missing.json"], "neither a file nor a JSON schema"),
    (["--regex", "(unclosed"], "--regex"),
    (["--choice", ","], "non-empty"),
    (["--json-object", "--regex", "a"], "cannot be combined"),
    (["--json-object", "--stop", "}"], "--stop cannot be combined"),
])
def test_a_constraint_that_cannot_be_enforced_is_exit_2_before_loading(cli, tmp_path, args, message):
    result = cli("generate", "hi", "-m", tmp_path / "no-such-model", *args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_bad_record_schema_names_its_line(cli, tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"prompt": "b", "schema": {"not": {}}}) + "\n")
    result = cli("generate", "-m", tmp_path / "no-such-model", "--input", batch)
    assert result.exit_code == 2
    assert f"{batch}:2: field 'schema'" in result.stderr and '["not"]' in result.stderr


def test_a_tokenizer_the_grammar_engine_cannot_use_is_exit_2_not_free_text(cli, tmp_path):
    """A model folder whose tokenizer has more tokens than the model has logits (a mismatched
    tokenizer): constrained decoding cannot map it, so the run stops instead of going on unconstrained."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests import tiny_models

    tokenizer = tiny_models.train_tokenizer(chat=True, vocab_size=300)
    config = LlamaConfig(vocab_size=len(tokenizer) - 40, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    tiny_models._save(LlamaForCausalLM(config), tokenizer, tmp_path / "mismatched")
    result = cli("generate", "hi", "-m", tmp_path / "mismatched", "--json-object")
    assert result.exit_code == 2, result.stderr
    assert "cannot be used for constrained decoding" in result.stderr and result.stdout == ""
