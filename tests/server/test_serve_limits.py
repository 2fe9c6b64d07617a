"""The server's door and its limits: API key, body size, a full queue, and SIGTERM with a
request in flight. One server for the module (one row, one waiting request at most); its
last test stops it with SIGTERM.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import openai
import pytest

from tests.server import ServerProcess, assert_clean_stderr, request, server_env

KEY = "test-key-1234"
BODY_LIMIT = 4096


@pytest.fixture(scope="module")
def server(tiny_llama, session_dir):
    process = ServerProcess(["--model", tiny_llama, "--api-key", KEY, "--max-queued", "1", "--batch-size", "1",
                             "--max-request-bytes", BODY_LIMIT], server_env(session_dir)).wait_ready()
    yield process
    process.stop()


def _chat_body(**options) -> dict:
    return {"model": "tiny-llama", "messages": [{"role": "user", "content": "the cat"}], "max_tokens": 3,
            "temperature": 0, **options}


AUTH = {"Authorization": f"Bearer {KEY}"}


def test_health_needs_no_key(server):
    status, _, body = request(server.url, "/health")
    assert status == 200 and body["status"] == "ok"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}])
def test_every_other_route_needs_the_key(server, headers):
    for path, body in (("/v1/models", None), ("/v1/chat/completions", _chat_body())):
        status, answer_headers, answer = request(server.url, path, body, headers)
        assert status == 401, answer
        assert answer["error"]["code"] == "invalid_api_key" and answer_headers["www-authenticate"] == "Bearer"


def test_the_openai_client_with_the_key_is_served_and_without_it_refused(server):
    answer = server.client(KEY).chat.completions.create(**_chat_body())
    assert answer.choices[0].finish_reason in ("length", "stop")
    with pytest.raises(openai.AuthenticationError):
        server.client("not-the-key").models.list()


def test_a_body_past_the_limit_is_413_declared_or_chunked(server):
    big = _chat_body(messages=[{"role": "user", "content": "x" * (2 * BODY_LIMIT)}])
    status, _, answer = request(server.url, "/v1/chat/completions", big, AUTH)
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    where = urlparse(server.url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    payload = json.dumps(big).encode()
    chunks = (payload[i:i + 1024] for i in range(0, len(payload), 1024))  # no Content-Length: chunked
    connection.request("POST", "/v1/chat/completions", chunks, {"Content-Type": "application/json", **AUTH},
                       encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["code"] == "request_too_large"
    connection.close()


def test_a_full_queue_is_429_with_retry_after(server):
    client = server.client(KEY)

    def attempt(_):
        try:
            client.chat.completions.create(**_chat_body(max_tokens=100))
            return "ok"
        except openai.RateLimitError as error:
            return error.response.headers.get("retry-after")

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(attempt, range(6)))
    assert "ok" in outcomes, outcomes
    refused = [o for o in outcomes if o != "ok"]
    assert refused and all(o == "1" for o in refused), outcomes


def test_sigterm_finishes_the_request_in_flight_and_exits_143(server):
    client = server.client(KEY)
    started, pieces, ends = threading.Event(), [], []

    def stream():
        for chunk in client.completions.create(model="tiny-llama", prompt="hello", max_tokens=100, temperature=0,
                                               stream=True):
            started.set()
            pieces.append(chunk.choices[0].text)
            ends.append(chunk.choices[0].finish_reason)
        started.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(60)
    code, stdout, stderr = server.stop(signal.SIGTERM)
    reader.join(60)
    assert ends[-1] == "length", "the stream in flight did not finish"
    assert code == 143, stderr
    assert stdout == ""
    assert_clean_stderr(stderr)
    assert "stopping (SIGTERM)" in stderr
