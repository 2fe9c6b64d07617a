"""The engine on a tiny Qwen2-VL (3-D rotary positions for image tokens): prompts with images give
the model's own greedy `generate`, alone and joining a running batch beside text prompts.

The prompts are made here as Qwen2-VL's processor makes them (its image processor, the image
tokens spelled out); the processor itself cannot be built without torchvision, which has no
CPU build on this machine's package index."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gptcli.engine import mrope
from gptcli.engine import scheduler as sched
from gptcli.engine.api import Finished, Request
from tests.tiny_vision import build_qwen2_vl, qwen_image_processor

NEW_TOKENS = 10


@dataclass(frozen=True)
class ProcessorTensors:
    """What the engine asks of a prompt with images (services.vision.PixelInputs): its tensors."""

    values: dict

    def tensors(self) -> dict:
        return dict(self.values)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    import torch
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from gptcli.models.loader import LoadedModel
    from gptcli.models.placement import choose_placement
    from gptcli.models.resolve import resolve

    folder = build_qwen2_vl(tmp_path_factory.mktemp("qwen") / "tiny-qwen2-vl")
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return LoadedModel(model, tokenizer, "causal-lm", resolve(str(folder)), choose_placement("cpu", "float32"), 0.0,
                       name="tiny-qwen2-vl")


def _image(size, color):
    from PIL import Image

    image = Image.new("RGB", size, color)
    image.putpixel((0, 0), (255, 255, 255))
    return image


def _prompt(lm, text: str, image=None) -> tuple[list[int], dict]:
    """Token ids and model inputs of a user turn, as Qwen2-VL's processor gives them."""
    import torch

    tokens = ""
    inputs = {}
    if image is not None:
        inputs = dict(qwen_image_processor()(images=[image], return_tensors="pt"))
        tokens = "<|vision_start|>" + "<|image_pad|>" * (int(inputs["image_grid_thw"].prod()) // 4) + "<|vision_end|>"
    rendered = f"<|im_start|>user\n{tokens}{text}<|im_end|>\n<|im_start|>assistant\n"
    ids = lm.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    if image is not None:
        inputs["mm_token_type_ids"] = (torch.tensor([ids]) == lm.model.config.image_token_id).long()
    return ids, inputs


def _own_generate(lm, ids, inputs) -> str:
    import torch

    tensor = torch.tensor([ids])
    out = lm.model.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor), **inputs,
                            max_new_tokens=NEW_TOKENS, do_sample=False)
    return lm.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)


def _engine(lm, prompts, batch_size: int, every: int = 1) -> dict:
    """Run the prompts, submitting one more every ``every`` steps (later ones join a running batch)."""
    scheduler = sched.Scheduler(lm, batch_size)
    waiting = [Request(i, tuple(ids), NEW_TOKENS, inputs=ProcessorTensors(inputs) if inputs else None)
               for i, (ids, inputs) in enumerate(prompts)]
    finished, steps = {}, 0
    while waiting or scheduler.has_work():
        if waiting and steps % every == 0:
            scheduler.submit(waiting.pop(0))
        for event in scheduler.step():
            if isinstance(event, Finished):
                finished[event.request_id] = event.text
        steps += 1
        assert steps < 500
    return finished


@pytest.fixture(scope="module")
def prompts(qwen):
    return [_prompt(qwen, "what is in it", _image((110, 105), (200, 10, 10))),
            _prompt(qwen, "hello world"),
            _prompt(qwen, "the cat", _image((50, 160), (10, 20, 220))),  # another grid: another offset
            _prompt(qwen, "two small red houses by the river")]


def test_an_image_prompt_alone_gives_the_models_own_greedy_output(qwen, prompts):
    ids, inputs = prompts[0]
    assert _engine(qwen, [prompts[0]], 1)[0] == _own_generate(qwen, ids, inputs)


def test_image_prompts_joining_a_batch_with_text_each_give_their_own_output(qwen, prompts):
    expected = [_own_generate(qwen, ids, inputs) for ids, inputs in prompts]
    got = _engine(qwen, prompts, 4, every=2)
    assert [got[i] for i in range(len(prompts))] == expected


def test_the_3d_positions_change_the_answer(qwen, prompts, monkeypatch):
    """Without them (1-D positions, as before this engine knew M-RoPE) the image prompts go astray."""
    monkeypatch.setattr(mrope, "rope_index", lambda model: None)
    plain = _engine(qwen, [prompts[0], prompts[2]], 2)
    assert [plain[0], plain[1]] != [_own_generate(qwen, *prompts[0]), _own_generate(qwen, *prompts[2])]
