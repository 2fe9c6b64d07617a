"""A tiny vision-language model built in code: a small CLIP vision tower under a 2-layer Llama
(LLaVA's architecture), its processor (image processor, tokenizer trained here, chat template)
saved beside it, so it loads through gptcli's real loader like a hub checkpoint would."""

from __future__ import annotations

from pathlib import Path

from tests.tiny_models import train_tokenizer

IMAGE_TOKEN = "<image>"
IMAGE_SIDE = 28  # pixels: 4 x 4 patches of 7, so an image is 16 image tokens
PATCH = 7

# Content is either a string or a list of parts, as in the hub's LLaVA templates.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for part in m['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_llava(folder: Path, seed: int = 0, context: int = 256) -> Path:
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tokenizer = train_tokenizer(chat=True)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.model_max_length = context
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIDE, patch_size=PATCH, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_select_strategy="default", vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIDE},
                                         crop_size={"height": IMAGE_SIDE, "width": IMAGE_SIDE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                               vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
                               num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_idefics3(folder: Path, seed: int = 0, context: int = 1024) -> Path:
    """SmolVLM's architecture (Idefics3: a SigLIP-like tower, pixel shuffle, a Llama): images are split
    into 32-pixel tiles plus a global view, so the image tokens depend on the image's size."""
    import torch
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil,
                              Idefics3Processor, LlamaConfig)
    from transformers.models.idefics3.configuration_idefics3 import Idefics3VisionConfig

    tokenizer = train_tokenizer(chat=True)
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<fake_token_around_image>", IMAGE_TOKEN, "<end_of_utterance>", "<global-img>"]})
    tokenizer.model_max_length = context
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    vision = Idefics3VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  image_size=32, patch_size=8)
    config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=2,
                            image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                                do_image_splitting=True)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                                  chat_template=CHAT_TEMPLATE)
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def picture(path: Path, color, size=(40, 30), fmt=None, exif=None) -> Path:
    """A small RGB image of one colour (a white corner pixel), saved in ``fmt`` (from the suffix if None)."""
    from PIL import Image

    image = Image.new("RGB", size, color)
    image.putpixel((0, 0), (255, 255, 255))
    image.save(path, fmt, **({"exif": exif} if exif is not None else {}))
    return path


def own_generate(folder: Path, prompt: str, images: list[Path], new_tokens: int = 10) -> str:
    """What the model's own `generate` gives for the processor's inputs of the same messages."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    pixels = [Image.open(p).convert("RGB") for p in images]
    inputs = processor(text=[text], images=[pixels] if pixels else None, add_special_tokens=False,
                       return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
    return processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


QWEN_TOKENS = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>")
QWEN_TEMPLATE = CHAT_TEMPLATE.replace("<image>\n", "<|vision_start|><|image_pad|><|vision_end|>")


def build_qwen2_vl(folder: Path, seed: int = 0, context: int = 512) -> Path:
    """Qwen2-VL's architecture: a ViT merging 2 x 2 patches, a Qwen2 decoder with 3-D rotary positions
    (M-RoPE) for image tokens. Saved with its tokenizer, image processor and chat template; its processor
    itself also needs a video processor, which transformers builds only with torchvision."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = train_tokenizer(chat=True)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_TOKENS)})
    tokenizer.model_max_length = context
    token = tokenizer.convert_tokens_to_ids
    text = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
                initializer_range=0.3)  # sharp attention: positions change the greedy tokens
    vision = dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, in_channels=3, mlp_ratio=2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=token("<|image_pad|>"),
                           video_token_id=token("<|video_pad|>"), vision_start_token_id=token("<|vision_start|>"),
                           vision_end_token_id=token("<|vision_end|>"))
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.chat_template = QWEN_TEMPLATE
    tokenizer.save_pretrained(folder)
    qwen_image_processor().save_pretrained(folder)
    return folder


def qwen_image_processor():
    """Images of 4 to 16 merged 28-pixel patches: a few tokens each, their grid following the image's shape."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, patch_size=14, merge_size=2,
                                    temporal_patch_size=2)


GEMMA_IMAGE_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}


def build_gemma3(folder: Path, seed: int = 0, context: int = 512) -> Path:
    """Gemma 3's architecture: a SigLIP tower pooled to 4 tokens an image, a Gemma 3 decoder whose
    first layer attends through a 16-token sliding window (shorter than an image prompt), and image
    tokens that attend to each other both ways (token_type_ids)."""
    import torch
    from transformers import (AutoTokenizer, Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor,
                              Gemma3TextConfig, SiglipVisionConfig)
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    trained = train_tokenizer(chat=True)
    trained.add_special_tokens({"additional_special_tokens": list(GEMMA_IMAGE_TOKENS.values())})
    trained.model_max_length = context
    trained.save_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder, extra_special_tokens=GEMMA_IMAGE_TOKENS)  # named: the processor reads them
    token = tokenizer.convert_tokens_to_ids
    text = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=context,
                            sliding_window=16, layer_types=["sliding_attention", "full_attention"],
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=8)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                          boi_token_index=token("<start_of_image>"), eoi_token_index=token("<end_of_image>"),
                          image_token_index=token("<image_soft_token>"))
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # at the default scale image tokens vanish beside Gemma's scaled text embeddings
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 1.0)
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}),
                                tokenizer=tokenizer, image_seq_length=4,
                                chat_template=CHAT_TEMPLATE.replace("<image>\n", "<start_of_image>"))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
