"""A real `gptcli serve --engine llama.cpp` on a tiny GGUF, spoken to with the openai client at
127.0.0.1: whole and streamed replies equal a local `generate --engine llama.cpp`, and requests
sent together (chat replies, a summarize task, a classify task scoring labels) each get what
they get alone, though they share one llama.cpp model and its cache."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.server import running_server
from tests.tiny_gguf import build_llama_gguf

PROMPTS = ["the cat sat on the mat", "hello world", "write a poem about the sea", "one two three four"]
ARTICLE = "the cat sat on the mat and the dog ran to the big red house in the city of paris"


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    return build_llama_gguf(tmp_path_factory.mktemp("serve-llamacpp") / "tiny.gguf")


@pytest.fixture(scope="module")
def server(gguf, session_dir):
    with running_server(["--model", gguf, "--engine", "llama.cpp"], session_dir) as process:
        yield process


def _local(cli, gguf, *args) -> dict:
    done = cli(*args, "--model", gguf, "--engine", "llama.cpp", "--json")
    assert done.exit_code == 0, done.stderr
    return json.loads(done.stdout)


def _chat(client, model: str, text: str, **options):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                          max_tokens=12, temperature=0, **options)


def test_whole_and_streamed_replies_equal_a_local_run(server, cli, gguf):
    client = server.client()
    expected = _local(cli, gguf, "generate", PROMPTS[0], "--max-new-tokens", "12")
    answer = _chat(client, server.model, PROMPTS[0])
    assert answer.choices[0].message.content == expected["text"]
    assert answer.usage.prompt_tokens == expected["prompt_tokens"]
    assert answer.usage.completion_tokens == expected["generated_tokens"]
    chunks = _chat(client, server.model, PROMPTS[0], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected["text"]


def test_requests_sent_together_each_get_what_they_get_alone(server, cli, gguf):
    client = server.client()
    expected = [_local(cli, gguf, "generate", p, "--max-new-tokens", "12")["text"] for p in PROMPTS]
    summary = _local(cli, gguf, "summarize", ARTICLE, "--max-new-tokens", "10")
    labels = _local(cli, gguf, "classify", ARTICLE, "--labels", "animals,cities")
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        replies = [pool.submit(_chat, client, server.model, p) for p in PROMPTS * 2]
        via_server = {"summarize": cli("summarize", "--server", server.url, "--json", "--max-new-tokens", "10",
                                       ARTICLE),
                      "classify": cli("classify", "--server", server.url, "--model", server.model, "--json",
                                      "--labels", "animals,cities",
                                      ARTICLE)}
        texts = [r.result(timeout=120).choices[0].message.content for r in replies]
    assert texts == expected * 2
    for name, done in via_server.items():
        assert done.exit_code == 0, done.stderr
    assert json.loads(via_server["summarize"].stdout)["summary"] == summary["summary"]
    scored = json.loads(via_server["classify"].stdout)
    assert scored["label"] == labels["label"] and scored["scores"] == pytest.approx(labels["scores"], abs=1e-4)
