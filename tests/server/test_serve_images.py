"""Images sent to a real `gptcli serve` on the tiny LLaVA with the real openai client, at 127.0.0.1:
data URLs and a local http URL; refusals in OpenAI's error shape, before anything is queued."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.server import ServerProcess, assert_clean_stderr, request, running_server, server_env, wait_idle
from tests.server.test_commands_via_server import NO_TORCH
from tests.tiny_vision import own_generate, picture

GREEDY = {"temperature": 0, "max_tokens": 10}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("pictures")
    return {"red": picture(folder / "red.png", (200, 10, 10)),
            "blue": picture(folder / "blue.jpg", (10, 20, 220), (30, 44), "JPEG")}


@pytest.fixture(scope="module")
def server(tiny_llava, session_dir):
    with running_server(["--model", tiny_llava, "--dtype", "float32"], session_dir) as process:
        yield process


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def picture_site(pictures):
    """A plain http server on 127.0.0.1 serving the pictures' folder, for the URL path."""
    folder = Path(pictures["red"]).parent
    handler = functools.partial(_QuietHandler, directory=str(folder))
    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{site.server_address[1]}"
    site.shutdown()
    site.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _image_message(text: str, *urls: str) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": parts + [{"type": "text", "text": text}]}]


def _ask(client, model: str, text: str, *urls: str, **options):
    return client.chat.completions.create(model=model, messages=_image_message(text, *urls), **options)


def test_an_image_as_a_data_url_gives_the_models_own_greedy_answer(server, client, tiny_llava, pictures):
    for name, mime in (("red", "image/png"), ("blue", "image/jpeg")):
        answer = _ask(client, server.model, "what is in it", data_url(pictures[name], mime), **GREEDY)
        assert answer.choices[0].message.content == own_generate(tiny_llava, "what is in it", [pictures[name]])
    text_only = client.chat.completions.create(model=server.model, messages=[
        {"role": "user", "content": "what is in it"}], **GREEDY)
    assert answer.usage.prompt_tokens == text_only.usage.prompt_tokens + 17  # 16 image tokens and a newline


def test_two_images_and_a_streamed_answer(server, client, tiny_llava, pictures):
    urls = (data_url(pictures["red"], "image/png"), data_url(pictures["blue"], "image/jpeg"))
    expected = own_generate(tiny_llava, "the cat", [pictures["red"], pictures["blue"]])
    chunks = list(_ask(client, server.model, "the cat", *urls, stream=True, **GREEDY))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected


def test_an_http_url_is_fetched(server, client, tiny_llava, pictures, picture_site):
    answer = _ask(client, server.model, "the dog", f"{picture_site}/blue.jpg", **GREEDY)
    assert answer.choices[0].message.content == own_generate(tiny_llava, "the dog", [pictures["blue"]])
    with pytest.raises(openai.BadRequestError) as missing:
        _ask(client, server.model, "the dog", f"{picture_site}/nothing.png", **GREEDY)
    assert "HTTP 404" in missing.value.body["message"]
    assert missing.value.body["param"] == "messages[0].content[0].image_url.url"


def test_image_and_text_requests_at_once_each_get_their_own_answer(server, client, tiny_llava, pictures):
    red = data_url(pictures["red"], "image/png")
    with ThreadPoolExecutor(4) as pool:
        with_image = [pool.submit(_ask, client, server.model, "the cat", red, **GREEDY) for _ in range(2)]
        text = [pool.submit(client.chat.completions.create, model=server.model,
                            messages=[{"role": "user", "content": "hello world"}], **GREEDY) for _ in range(2)]
        answers = [f.result(timeout=120).choices[0].message.content for f in with_image + text]
    assert answers[:2] == [own_generate(tiny_llava, "the cat", [pictures["red"]])] * 2
    assert answers[2:] == [own_generate(tiny_llava, "hello world", [])] * 2
    wait_idle(server.url)


def test_a_photo_larger_than_the_text_body_limit_is_accepted(server, client, tmp_path):
    import os

    from PIL import Image

    noise = Image.frombytes("RGB", (1400, 1100), os.urandom(1400 * 1100 * 3))  # does not compress: ~4.6 MB PNG
    noise.save(tmp_path / "noise.png")
    url = data_url(tmp_path / "noise.png", "image/png")
    assert len(url) > 4 * 2**20
    answer = _ask(client, server.model, "what is in it", url, **GREEDY)
    assert answer.usage.completion_tokens == 10


@pytest.mark.parametrize("url, param, says", [
    ("/etc/passwd", "messages[0].content[0].image_url.url", "does not open files"),
    ("file:///etc/hostname", "messages[0].content[0].image_url.url", "does not open files"),
    ("-", "messages[0].content[0].image_url.url", "does not open files"),
    ("data:image/png;base64,@@@@", "messages[0].content[0].image_url.url", "not valid base64"),
    ("data:image/png;base64," + base64.b64encode(b"not an image at all").decode(),
     "messages[0].content[0].image_url.url", "not an image"),
])
def test_bad_image_urls_are_400_naming_the_part(server, url, param, says):
    status, _, body = request(server.url, "/v1/chat/completions", {
        "model": server.model, "messages": _image_message("hi", url), **GREEDY})
    assert status == 400, body
    assert body["error"]["param"] == param and says in body["error"]["message"], body


def test_images_outside_user_messages_and_unknown_parts_are_refused(server, pictures):
    red = data_url(pictures["red"], "image/png")
    status, _, body = request(server.url, "/v1/chat/completions", {"model": server.model, "messages": [
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": red}}]},
        {"role": "user", "content": "hi"}]})
    assert status == 400 and "images go in user messages" in body["error"]["message"], body
    status, _, body = request(server.url, "/v1/chat/completions", {"model": server.model, "messages": [
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]})
    assert status == 400 and "'input_audio'" in body["error"]["message"], body
    status, _, body = request(server.url, "/v1/chat/completions", {"model": server.model, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": red}}] * 17}]})
    assert status == 400 and "more than the 16" in body["error"]["message"], body
    assert wait_idle(server.url)["failed"] == 0


def _torchless(*args, stdin: str = "", cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_generate_server_sends_images_and_writes_what_a_local_run_writes(server, cli, tiny_llava, pictures,
                                                                         tmp_path):
    args = ("--max-new-tokens", "10", "--image", pictures["red"])
    remote = _torchless("generate", "--server", server.url, "what is in it", *args, "--json")
    assert remote.returncode == 0, remote.stderr
    local = cli("generate", "-m", tiny_llava, "--dtype", "float32", "what is in it", *args, "--json")
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    assert json.loads(remote.stdout)["text"] == own_generate(tiny_llava, "what is in it", [pictures["red"]])
    records = [{"prompt": "the cat", "images": [str(pictures["blue"])]}, {"prompt": "hello world"},
               {"messages": [{"role": "user", "content": [
                   {"type": "image_url", "image_url": {"url": str(pictures["red"])}},
                   {"type": "text", "text": "the dog"}]}]}]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(r) + "\n" for r in records))
    remote = _torchless("generate", "--server", server.url, "--input", batch, "--max-new-tokens", "10",
                        "--output", tmp_path / "remote.jsonl")
    assert remote.returncode == 0, remote.stderr
    texts = [json.loads(line)["text"] for line in (tmp_path / "remote.jsonl").read_text().splitlines()]
    assert texts == [own_generate(tiny_llava, "the cat", [pictures["blue"]]), own_generate(tiny_llava, "hello world", []),
                     own_generate(tiny_llava, "the dog", [pictures["red"]])]


def test_chat_server_sends_the_attached_image(server, tiny_llava, pictures):
    script = "/image red.png\nwhat is in it\n"
    remote = _torchless("chat", "--server", server.url, "--max-new-tokens", "10", "--temperature", "0",
                        stdin=script, cwd=Path(pictures["red"]).parent)
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout == own_generate(tiny_llava, "what is in it", [pictures["red"]]) + "\n"
    assert "attached red.png" in remote.stderr


def test_the_server_log_stays_clean(server):
    code, stdout, stderr = server.stop()
    assert code in (0, 130, 143) and stdout == ""
    assert_clean_stderr(stderr)


def test_qwen2_vl_answers_an_image_with_its_own_greedy_output_or_says_it_needs_torchvision(session_dir, tmp_path):
    """Qwen2-VL (3-D image positions) behind the real server. Its processor needs torchvision: without
    it, serve exits 2 with the install command before listening; with it (make test-torchvision), the
    openai client gets the model's own greedy answer for an image and for text."""
    import importlib.util

    from tests.tiny_vision import build_qwen2_vl

    folder = build_qwen2_vl(tmp_path / "tiny-qwen2-vl")
    image = picture(tmp_path / "red.png", (200, 10, 10), (110, 105))
    process = ServerProcess(["--model", folder, "--dtype", "float32"], server_env(session_dir))
    if importlib.util.find_spec("torchvision") is None:
        code = process.proc.wait(120)
        process.stop()  # collects the last stderr lines
        assert code == 2 and "needs torchvision" in process.stderr and "pip install" in process.stderr
        return
    process.wait_ready()
    try:
        client = process.client()
        answer = _ask(client, process.model, "what is in it", data_url(image, "image/png"), **GREEDY)
        assert answer.choices[0].message.content == own_generate(folder, "what is in it", [image])
        text = client.chat.completions.create(model=process.model, messages=[
            {"role": "user", "content": "hello world"}], **GREEDY)
        assert text.choices[0].message.content == own_generate(folder, "hello world", [])
    finally:
        process.stop()
