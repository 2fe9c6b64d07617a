"""A real `gptcli serve` on the tiny Llama, spoken to with the real openai client at 127.0.0.1.

One server for the module; its last test stops it with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import http.client
import json
import math
import re
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import openai
import pytest

from tests.server import assert_clean_stderr, health, request, running_server, wait_idle

GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def server(tiny_llama, embedder, session_dir):
    args = ["--model", tiny_llama, "--dtype", "float32", "--embedding-model", embedder]
    with running_server(args, session_dir) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def _chat(client, text: str, **options):
    return client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": text}],
                                          **options)


def _generated(cli, tiny_llama, prompt: str, tokens: int, *extra: str) -> dict:
    result = cli("generate", prompt, "-m", tiny_llama, "--max-new-tokens", tokens, "--dtype", "float32", "--json",
                 *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_the_ready_line_names_the_model_and_models_lists_it(server, client, embedder):
    assert server.model == "tiny-llama"
    names = [model.id for model in client.models.list().data]
    assert names[0] == "tiny-llama" and Path(embedder).name in names


def test_greedy_chat_equals_gptcli_generate(client, cli, tiny_llama):
    answer = _chat(client, "the cat sat on the mat", max_tokens=12, **GREEDY)
    expected = _generated(cli, tiny_llama, "the cat sat on the mat", 12)
    assert answer.choices[0].message.content == expected["text"]
    assert answer.choices[0].message.role == "assistant" and answer.choices[0].finish_reason == "length"
    assert answer.usage.prompt_tokens == expected["prompt_tokens"] and answer.usage.completion_tokens == 12
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 12


def test_greedy_completion_equals_gptcli_generate_raw(client, cli, tiny_llama):
    answer = client.completions.create(model="tiny-llama", prompt="hello world", max_tokens=10, **GREEDY)
    expected = _generated(cli, tiny_llama, "hello world", 10, "--raw")
    assert answer.choices[0].text == expected["text"]
    assert answer.usage.prompt_tokens == expected["prompt_tokens"]


def test_a_list_of_prompts_gives_a_choice_each_in_order(client):
    prompts = ["the dog ran", "a big red house", "one two three"]
    together = client.completions.create(model="tiny-llama", prompt=prompts, max_tokens=6, **GREEDY)
    alone = [client.completions.create(model="tiny-llama", prompt=p, max_tokens=6, **GREEDY) for p in prompts]
    assert [c.index for c in together.choices] == [0, 1, 2]
    assert [c.text for c in together.choices] == [a.choices[0].text for a in alone]
    assert together.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)


def test_streamed_chat_gives_the_same_text_in_openai_chunks(client):
    whole = _chat(client, "write a poem about the sea", max_tokens=16, **GREEDY)
    chunks = list(_chat(client, "write a poem about the sea", max_tokens=16, stream=True,
                        stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].object == "chat.completion.chunk" and chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    ends = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert ends == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_the_raw_stream_is_server_sent_events_ending_in_done(server):
    status, headers, body = request(server.url, "/v1/completions", {
        "model": "tiny-llama", "prompt": "the sun", "max_tokens": 4, "stream": True, **GREEDY})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [block for block in body.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events) and events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_streamed_completions_of_several_prompts_match_the_whole_answer(client):
    prompts = ["the moon", "a small tree"]
    whole = client.completions.create(model="tiny-llama", prompt=prompts, max_tokens=8, **GREEDY)
    texts = ["", ""]
    for chunk in client.completions.create(model="tiny-llama", prompt=prompts, max_tokens=8, stream=True, **GREEDY):
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == [choice.text for choice in whole.choices]


def test_n_choices_sample_different_texts(client):
    answer = _chat(client, "the cat", n=3, temperature=1.0, max_tokens=8)
    assert [choice.index for choice in answer.choices] == [0, 1, 2]
    assert len({choice.message.content for choice in answer.choices}) > 1
    assert answer.usage.completion_tokens <= 3 * 8


def test_a_seed_reproduces_its_text_and_another_seed_does_not(client):
    def sample(**seed):
        return _chat(client, "the dog", temperature=1.0, max_tokens=10, **seed).choices[0].message.content

    assert sample(seed=7) == sample(seed=7)
    assert sample(seed=7) != sample(seed=8)
    assert sample() != sample()  # unseeded requests sample independently


def test_stop_strings_end_the_text_before_them(client):
    free = client.completions.create(model="tiny-llama", prompt="the cat sat on", max_tokens=20, **GREEDY)
    text = free.choices[0].text
    word = next((m for m in re.finditer(r"[A-Za-z]{2,}", text) if m.start() > 0), None)
    assert word is not None, f"no ASCII word to stop at in {text!r}"
    stopped = client.completions.create(model="tiny-llama", prompt="the cat sat on", max_tokens=20,
                                        stop=[word.group(), "zzqq"], **GREEDY)
    assert stopped.choices[0].text == text[:text.find(word.group())]
    assert stopped.choices[0].finish_reason == "stop"


def test_chat_logprobs_have_the_top_alternatives_and_are_never_positive(client):
    answer = _chat(client, "the river", max_tokens=5, logprobs=True, top_logprobs=3, **GREEDY)
    content = answer.choices[0].logprobs.content
    assert len(content) == 5
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        values = [top.logprob for top in token.top_logprobs]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert math.isclose(token.logprob, values[0], abs_tol=1e-5)  # greedy picks the likeliest
        assert token.bytes == list(token.token.encode("utf-8"))


def test_completion_logprobs_are_parallel_lists(client):
    answer = client.completions.create(model="tiny-llama", prompt="one two", max_tokens=4, logprobs=2, **GREEDY)
    logprobs = answer.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 4
    assert all(value <= 0 for value in logprobs.token_logprobs)
    assert logprobs.text_offset == sorted(logprobs.text_offset) and logprobs.text_offset[0] == 0
    assert all(1 <= len(top) <= 2 for top in logprobs.top_logprobs)


def test_embeddings_have_the_models_width_and_repeat_for_the_same_text(client, embedder):
    answer = client.embeddings.create(model=Path(embedder).name, input=["the cat sat", "the cat sat", "a dog"])
    vectors = [item.embedding for item in answer.data]
    assert [item.index for item in answer.data] == [0, 1, 2] and len(vectors[0]) == 32
    assert vectors[0] == vectors[1] and vectors[0] != vectors[2]
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0, rel_tol=1e-4)
    assert answer.usage.prompt_tokens > 0


def test_embeddings_as_float_lists_over_raw_http(server, embedder):
    status, _, body = request(server.url, "/v1/embeddings", {"model": Path(embedder).name, "input": "the cat sat",
                                                             "encoding_format": "float"})
    assert status == 200 and len(body["data"][0]["embedding"]) == 32


@pytest.mark.parametrize("change, param", [
    ({"temperature": -1}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"seed": -1}, "seed"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}]},
     "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].image_url"),
])
def test_bad_parameters_are_400_in_openai_error_shape(server, change, param):
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **change}
    status, _, answer = request(server.url, "/v1/chat/completions", body)
    assert status == 400, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["param"] == param and answer["error"]["type"] == "invalid_request_error"


def test_the_openai_client_raises_its_own_errors(client):
    with pytest.raises(openai.BadRequestError, match="not supported"):
        _chat(client, "hi", max_tokens=2, logit_bias={"5": 10})
    with pytest.raises(openai.NotFoundError, match="tiny-llama"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert _chat(client, "hi", max_tokens=2, presence_penalty=0, frequency_penalty=0).choices  # 0 is accepted


def test_text_parts_are_joined_and_an_image_for_a_text_model_is_400(client):
    parts = [{"type": "text", "text": "the cat sat"}, {"type": "text", "text": "on the mat"}]
    joined = client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": parts}],
                                            max_tokens=6, **GREEDY)
    assert joined.choices[0].message.content == _chat(client, "the cat sat\non the mat", max_tokens=6,
                                                      **GREEDY).choices[0].message.content
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": [image]}])
    assert refused.value.body["code"] == "images_not_supported" and "reads text only" in refused.value.body["message"]


def test_a_body_that_is_not_json_is_400_not_422(server):
    status, _, answer = request(server.url, "/v1/chat/completions", b"{not json")
    assert status == 400 and answer["error"]["code"] == "invalid_json"


def test_a_prompt_longer_than_the_context_is_413(client):
    long_prompt = " ".join(["the cat sat on the mat"] * 60)
    for call in (lambda: _chat(client, long_prompt, max_tokens=2),
                 lambda: client.completions.create(model="tiny-llama", prompt=long_prompt, max_tokens=2)):
        with pytest.raises(openai.APIStatusError) as caught:
            call()
        assert caught.value.status_code == 413 and "context" in caught.value.message


def test_max_tokens_past_the_context_is_cut_to_what_fits(client):
    answer = client.completions.create(model="tiny-llama", prompt="the cat", max_tokens=100_000, **GREEDY)
    assert answer.choices[0].finish_reason in ("length", "stop")
    assert answer.usage.total_tokens <= 128  # the tiny model's context


def test_sixteen_concurrent_requests_give_what_each_gives_alone(client):
    prompts = [f"{word} sat on the {other}" for word in ("cat", "dog", "sun", "moon")
               for other in ("mat", "tree", "river", "house")]
    alone = [_chat(client, p, max_tokens=8, **GREEDY).choices[0].message.content for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: _chat(client, p, max_tokens=8, **GREEDY).choices[0].message.content,
                                 prompts))
    assert together == alone


def _hang_up_mid_stream(url: str) -> None:
    """Start a long streamed chat, read until the first content chunk, and close the connection."""
    where = urlparse(url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100, "n": 4,
            "stream": True, **GREEDY}
    connection.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    for _ in range(50):
        line = response.fp.readline()
        if b'"content"' in line and b'"role"' not in line:
            break
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()


def _hang_up_while_waiting(url: str) -> None:
    """Send a long non-streamed request and close the socket while it runs."""
    where = urlparse(url)
    body = json.dumps({"model": "tiny-llama", "prompt": "hello", "max_tokens": 100, "n": 4, **GREEDY}).encode()
    with socket.create_connection((where.hostname, where.port), timeout=60) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        deadline = time.time() + 10
        while health(url)["in_flight"] == 0 and time.time() < deadline:
            time.sleep(0.005)


@pytest.mark.parametrize("hang_up", [_hang_up_mid_stream, _hang_up_while_waiting])
def test_a_client_that_hangs_up_cancels_its_rows(server, client, hang_up):
    # A try in which all rows finished before the hang-up proves nothing: try again (bounded).
    for _ in range(3):
        before = wait_idle(server.url)
        hang_up(server.url)
        after = wait_idle(server.url)
        if after["cancelled"] > before["cancelled"]:
            break
    assert after["cancelled"] > before["cancelled"], (before, after)
    assert after["in_flight"] == 0 and after["waiting"] == 0
    assert _chat(client, "the cat", max_tokens=3, **GREEDY).choices[0].message.content is not None


def test_presence_and_frequency_penalties_are_the_commands_own(client, cli, tiny_llama):
    plain = _chat(client, "the cat sat on the mat", max_tokens=24, **GREEDY).choices[0].message.content
    answer = _chat(client, "the cat sat on the mat", max_tokens=24, frequency_penalty=2.0, presence_penalty=1.0,
                   **GREEDY).choices[0].message.content
    expected = _generated(cli, tiny_llama, "the cat sat on the mat", 24, "--frequency-penalty", "2",
                          "--presence-penalty", "1")
    assert answer == expected["text"]
    assert answer != plain  # the tiny model repeats itself; the penalties change what it picks


def test_ctrl_c_stops_cleanly_with_exit_130(server):
    code, stdout, stderr = server.stop(signal.SIGINT)
    assert code == 130, stderr
    assert stdout == ""
    assert_clean_stderr(stderr)
    assert "stopping (SIGINT)" in stderr and "interrupted" in stderr

