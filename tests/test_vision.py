"""Images in `gptcli generate`: a tiny LLaVA built in code, real PNG and JPEG files, the real loader."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.tiny_vision import own_generate, picture

ARGS = ("--dtype", "float32", "--max-new-tokens", "10")


@pytest.fixture
def pictures(tmp_path) -> dict:
    return {"red": picture(tmp_path / "red.png", (200, 10, 10)),
            "blue": picture(tmp_path / "blue.jpg", (10, 20, 220), (30, 44), "JPEG")}


def test_greedy_output_equals_the_models_own_generate(cli, tiny_llava, pictures):
    for name in ("red", "blue"):  # a PNG and a JPEG
        result = cli("generate", "what is in it", "-m", tiny_llava, "--image", pictures[name], *ARGS)
        assert result.exit_code == 0, result.stderr
        assert result.stdout == own_generate(tiny_llava, "what is in it", [pictures[name]]) + "\n"


def test_two_images_and_the_image_changes_the_answer(cli, tiny_llava, pictures):
    both = cli("generate", "the cat", "-m", tiny_llava, "--image", pictures["red"], "--image", pictures["blue"],
               *ARGS, "--json")
    record = json.loads(both.stdout)
    assert record["images"] == [str(pictures["red"]), str(pictures["blue"])]
    assert record["text"] == own_generate(tiny_llava, "the cat", [pictures["red"], pictures["blue"]])
    text_only = json.loads(cli("generate", "the cat", "-m", tiny_llava, *ARGS, "--json").stdout)
    assert record["prompt_tokens"] == text_only["prompt_tokens"] + 2 * 17  # 16 image tokens and a newline each


def test_batch_mixes_images_and_text_in_input_order_and_each_equals_its_run_alone(cli, tiny_llava, pictures,
                                                                              tmp_path):
    records = [{"id": "a", "prompt": "the cat", "images": [str(pictures["red"])]},
               {"id": "b", "prompt": "hello world"},
               {"id": "c", "messages": [{"role": "user", "content": [
                   {"type": "image_url", "image_url": {"url": str(pictures["blue"])}},
                   {"type": "text", "text": "the cat"}]}]},
               {"id": "d", "prompt": "the dog", "images": str(pictures["blue"])}]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "out.jsonl"
    result = cli("generate", "--input", batch, "-m", tiny_llava, *ARGS, "--output", out, "--batch-size", "4")
    assert result.exit_code == 0, result.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in got] == ["a", "b", "c", "d"]
    alone = {"a": ("the cat", [pictures["red"]]), "b": ("hello world", []), "c": ("the cat", [pictures["blue"]]),
             "d": ("the dog", [pictures["blue"]])}
    for record in got:
        prompt, images = alone[record["id"]]
        assert record["text"] == own_generate(tiny_llava, prompt, images), record["id"]


def test_rerun_resumes_and_a_changed_image_is_a_different_run(cli, tiny_llava, pictures, tmp_path):
    batch = tmp_path / "b.jsonl"
    batch.write_text(json.dumps({"prompt": "the cat", "images": [str(pictures["red"])]}) + "\n")
    out = tmp_path / "o.jsonl"
    assert cli("generate", "--input", batch, "-m", tiny_llava, *ARGS, "--output", out).exit_code == 0
    first = out.read_text()
    again = cli("generate", "--input", batch, "-m", tiny_llava, *ARGS, "--output", out)
    assert again.exit_code == 0 and out.read_text() == first
    picture(pictures["red"], (0, 200, 0))  # same name, other pixels: its old result must not be kept
    changed = cli("generate", "--input", batch, "-m", tiny_llava, *ARGS, "--output", out)
    assert changed.exit_code == 2 and out.read_text() == first, changed.stderr


def test_image_from_stdin_and_from_a_local_url(cli, tiny_llava, pictures):
    import http.server
    import threading
    from functools import partial

    expected = own_generate(tiny_llava, "what is in it", [pictures["red"]])
    piped = cli("generate", "what is in it", "-m", tiny_llava, "--image", "-", *ARGS,
                input=pictures["red"].read_bytes())
    assert piped.exit_code == 0 and piped.stdout == expected + "\n", piped.stderr
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(pictures["red"].parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/red.png"
        fetched = cli("generate", "what is in it", "-m", tiny_llava, "--image", url, *ARGS)
        missing = cli("generate", "what is in it", "-m", tiny_llava, "--image", url + ".gone", *ARGS)
    finally:
        server.shutdown()
    assert fetched.exit_code == 0 and fetched.stdout == expected + "\n", fetched.stderr
    assert missing.exit_code == 2 and "HTTP 404" in missing.stderr


def test_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    from gptcli.imageio import read_image

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = picture(tmp_path / "turned.jpg", (100, 100, 100), (40, 20), "JPEG", exif=exif.tobytes())
    assert Image.open(path).size == (40, 20)
    assert read_image(str(path)).pixels().size == (20, 40)


@pytest.mark.parametrize("make, says", [
    (lambda p: p.write_bytes(b"plain text, not a picture"), "not an image in a supported format"),
    (lambda p: p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"), "not an image"),
    (lambda p: p.write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'), "not an image"),
    (lambda p: p.write_bytes(_png_bytes()[:60]), "cannot be decoded"),
    (lambda p: picture(p, (0, 0, 0), (8000, 7000), "PNG"), "pixels, more than"),
    (lambda p: None, "no such file"),
])
def test_bad_images_are_refused_before_any_model_loads(cli, tiny_llava, tmp_path, make, says):
    path = tmp_path / "bad.png"
    make(path)
    result = cli("generate", "what", "-m", tiny_llava, "--image", path, "--verbose")
    assert result.exit_code == 2
    error, = [line for line in result.stderr.splitlines() if line.startswith("gptcli: error:")]
    assert str(path) in error and says in error
    assert "loaded" not in result.stderr


def _png_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def test_a_text_only_model_given_an_image_names_a_model_kind_that_can(cli, tiny_llama, pictures):
    result = cli("generate", "what", "-m", tiny_llama, "--image", pictures["red"], "--verbose")
    assert result.exit_code == 2
    assert "reads text only" in result.stderr and "image-text-to-text model" in result.stderr
    assert "loaded" not in result.stderr  # refused from its config, before the weights


def test_text_prompts_on_a_vision_model_still_work(cli, tiny_llava):
    result = cli("generate", "hello world", "-m", tiny_llava, *ARGS)
    assert result.exit_code == 0 and result.stdout == own_generate(tiny_llava, "hello world", []) + "\n"


def test_smolvlm_architecture_batch_of_different_sized_images_equals_its_own_generate(cli, tiny_idefics3,
                                                                                      pictures, tmp_path):
    wide = picture(tmp_path / "wide.png", (30, 200, 30), (90, 30))  # more tiles: more image tokens
    records = [{"prompt": "the cat", "images": [str(wide)]}, {"prompt": "hello world"},
               {"prompt": "the dog", "images": [str(pictures["red"]), str(pictures["blue"])]}]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = cli("generate", "--input", batch, "-m", tiny_idefics3, *ARGS, "--json", "--batch-size", "3")
    assert result.exit_code == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    for record, asked in zip(got, records):
        own = own_generate(tiny_idefics3, asked["prompt"], [Path(p) for p in asked.get("images", [])])
        assert record["text"] == own
    assert got[0]["prompt_tokens"] != got[2]["prompt_tokens"]


def test_raw_with_an_image_is_refused(cli, tiny_llava, pictures):
    result = cli("generate", "x", "-m", tiny_llava, "--image", pictures["red"], "--raw")
    assert result.exit_code == 2 and "drop --raw" in result.stderr


def test_qwen2_vl_needs_torchvision_and_the_error_says_how_to_install_it(cli, tmp_path):
    """Qwen2-VL's processor is built by transformers only with torchvision (none for CPU torch on this
    machine's index): without it, exit 2 with the install command; with it, the model's own answer."""
    import importlib.util

    from tests.tiny_vision import build_qwen2_vl

    folder = build_qwen2_vl(tmp_path / "tiny-qwen2-vl")
    image = picture(tmp_path / "red.png", (200, 10, 10), (110, 105))
    result = cli("generate", "what is in it", "-m", folder, "--image", image, *ARGS)
    if importlib.util.find_spec("torchvision") is None:
        assert result.exit_code == 2 and "needs torchvision" in result.stderr
        assert "pip install 'torchvision==0." in result.stderr and "loaded" not in result.stderr
    else:  # run by hand in a venv with torchvision (README "Images"): make test-torchvision
        assert result.exit_code == 0, result.stderr
        assert result.stdout == own_generate(folder, "what is in it", [image]) + "\n"
        _qwen_batch_equals_its_own_generate(cli, folder, image, tmp_path)


def _qwen_batch_equals_its_own_generate(cli, folder, image, tmp_path):
    """Image grids of two shapes (other 3-D position offsets) and a text row in one running batch."""
    tall = picture(tmp_path / "tall.jpg", (10, 20, 220), (50, 160), "JPEG")
    records = [{"prompt": "the cat", "images": [str(tall)]}, {"prompt": "hello world"},
               {"prompt": "what is in it", "images": [str(image)]}, {"prompt": "two small red houses"}]
    batch = tmp_path / "qwen.jsonl"
    batch.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = cli("generate", "--input", batch, "-m", folder, *ARGS, "--json", "--batch-size", "4")
    assert result.exit_code == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    for record, asked in zip(got, records, strict=True):
        assert record["text"] == own_generate(folder, asked["prompt"], [Path(p) for p in asked.get("images", [])])


def test_gemma3_architecture_batch_with_a_sliding_window_equals_its_own_generate(cli, tmp_path, pictures):
    """A prompt with an image is longer than the first layer's window; fixed batches hold one such prompt."""
    from tests.tiny_vision import build_gemma3

    folder = build_gemma3(tmp_path / "tiny-gemma3")
    records = [{"prompt": "the cat", "images": [str(pictures["red"])]}, {"prompt": "hello world"},
               {"prompt": "the cat", "images": [str(pictures["blue"])]}, {"prompt": "two small red houses"}]
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = cli("generate", "--input", batch, "-m", folder, "--dtype", "float32", "--max-new-tokens", "24", "--json",
                 "--batch-size", "4")
    assert result.exit_code == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert got[0]["prompt_tokens"] > 16  # past the window
    for record, asked in zip(got, records):
        own = own_generate(folder, asked["prompt"], [Path(p) for p in asked.get("images", [])], new_tokens=24)
        assert record["text"] == own, asked
    assert got[0]["text"] != got[2]["text"]  # the same words with another image: the image is seen


def test_seeded_sampling_stops_and_samples_with_images_work_as_for_text(cli, tiny_llava, pictures, tmp_path):
    sampled = ("--temperature", "1.0", "--seed", "7", "-n", "2", "--json")
    once = cli("generate", "the cat", "-m", tiny_llava, "--image", pictures["red"], *ARGS, *sampled)
    again = cli("generate", "the cat", "-m", tiny_llava, "--image", pictures["red"], *ARGS, *sampled)
    assert once.exit_code == 0, once.stderr
    samples = [json.loads(line)["text"] for line in once.stdout.splitlines()]
    assert once.stdout == again.stdout and len(samples) == 2 and samples[0] != samples[1]
    batch = tmp_path / "b.jsonl"  # the same record beside others: the same samples (seeded per record)
    batch.write_text(json.dumps({"prompt": "the cat", "images": [str(pictures["red"])]}) + "\n" +
                     json.dumps({"prompt": "hello"}) + "\n")
    mixed = cli("generate", "--input", batch, "-m", tiny_llava, *ARGS, *sampled)
    assert [json.loads(line)["text"] for line in mixed.stdout.splitlines()][:2] == samples
    greedy = own_generate(tiny_llava, "the cat", [pictures["red"]])
    stop = greedy[3:5]  # a stop string inside the greedy answer ends it there
    stopped = cli("generate", "the cat", "-m", tiny_llava, "--image", pictures["red"], *ARGS, "--stop", stop,
                  "--json")
    record = json.loads(stopped.stdout)
    assert record["text"] == greedy[:greedy.index(stop)] and record["finish_reason"] == "stop"
