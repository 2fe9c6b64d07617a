"""response_format on a real `gptcli serve` (the real openai client), and `generate --server` with
an output constraint: the same guarantees as a local run."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import openai
import pytest

from tests.server import running_server
from tests.server.test_commands_via_server import NO_TORCH

ANSWER = {"type": "object",
          "properties": {"answer": {"type": "string", "enum": ["yes", "no"]},
                         "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
                         "note": {"type": "string", "maxLength": 5}},
          "required": ["answer", "confidence"], "additionalProperties": False}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER, "strict": True}}


@pytest.fixture(scope="module")
def server(tiny_llama, session_dir):
    with running_server(["--model", tiny_llama, "--dtype", "float32"], session_dir) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def _chat(client, **options):
    return client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "yes or no?"}],
                                          max_tokens=80, **options)


def test_json_schema_choices_at_temperature_1_all_validate(client):
    answer = _chat(client, response_format=SCHEMA_FORMAT, n=8, temperature=1.0, seed=11)
    for choice in answer.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), ANSWER)


def test_a_streamed_json_object_parses_once_joined(client):
    chunks = _chat(client, response_format={"type": "json_object"}, stream=True, temperature=1.0, seed=3)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("options, words", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}}, '["not"]'),
    ({"response_format": {"type": "xml"}}, "json_object"),
    ({"response_format": {"type": "json_object"}, "stop": ["}"]}, "stop"),
])
def test_a_response_format_that_cannot_be_enforced_is_400(client, options, words):
    with pytest.raises(openai.BadRequestError) as caught:
        _chat(client, **options)
    assert words in caught.value.message
    assert caught.value.body["param"] in ("response_format", "stop")


def test_generate_through_the_server_with_a_schema_is_the_local_run(server, cli, tiny_llama):
    args = ["yes or no?", "--json-schema", json.dumps(ANSWER), "--temperature", 1, "--seed", 4, "-n", 3,
            "--max-new-tokens", 80, "--json"]
    local = cli("generate", "-m", tiny_llama, "--dtype", "float32", *args)
    assert local.exit_code == 0, local.stderr
    remote = subprocess.run([sys.executable, "-c", NO_TORCH, "generate", "--server", server.url, *map(str, args)],
                            capture_output=True, text=True, timeout=120)
    assert remote.returncode == 0, remote.stderr
    texts = [json.loads(line)["text"] for line in remote.stdout.splitlines()]
    assert texts == [json.loads(line)["text"] for line in local.stdout.splitlines()]
    for text in texts:
        jsonschema.validate(json.loads(text), ANSWER)
