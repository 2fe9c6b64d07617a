"""A tiny Llama written as a GGUF file, as llama.cpp's converter would write it (float32 tensors).

Both of gptcli's engines read it: transformers through gptcli's one-time GGUF conversion, and
llama.cpp directly, so a test can hold one engine's output against the other's.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny_models import build_llama

SPECIAL, NORMAL = 3, 1  # GGUF token types: control and normal


def build_llama_gguf(path: Path, seed: int = 0, context: int = 512) -> Path:
    """The tiny Llama of tests.tiny_models (with ``context`` positions), saved as ``path`` (a .gguf file)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_llama(path.with_suffix(".hf"), seed=seed, context=context)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    _write(path, model, tokenizer)
    return path


def _write(path: Path, model, tokenizer) -> None:
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]) if getattr(config, "rope_parameters", None)
                              else float(config.rope_theta))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(writer, tokenizer)
    for name, tensor in _tensors(model):
        writer.add_tensor(name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tokenizer(writer, tokenizer) -> None:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    specials = set(tokenizer.all_special_tokens) | {"<|im_start|>", "<|im_end|>"}
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([SPECIAL if token in specials else NORMAL for token, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)


def _tensors(model):
    """(GGUF name, float32 array) for every weight; q and k rows reordered for llama.cpp's rotary
    layout (interleaved pairs), which transformers' GGUF reader turns back."""
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    # bfloat16 values stored as float32: gptcli's GGUF conversion keeps bfloat16, so both engines hold the same numbers
    state = {name: weight.detach().bfloat16().float().numpy() for name, weight in model.state_dict().items()}
    yield "token_embd.weight", state["model.embed_tokens.weight"]
    yield "output_norm.weight", state["model.norm.weight"]
    yield "output.weight", state["lm_head.weight"]
    parts = {"input_layernorm": "attn_norm", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for layer in range(config.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        yield f"blk.{layer}.attn_q.weight", _interleave(state[prefix + "self_attn.q_proj.weight"], heads)
        yield f"blk.{layer}.attn_k.weight", _interleave(state[prefix + "self_attn.k_proj.weight"], kv_heads)
        for hf, ours in parts.items():
            yield f"blk.{layer}.{ours}.weight", state[f"{prefix}{hf}.weight"]


def _interleave(weight, heads: int):
    """Per head, rows (first half, second half) become alternating pairs: transformers rotates
    halves of a head, llama.cpp rotates neighbouring pairs."""
    rows, columns = weight.shape
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, columns).swapaxes(1, 2).reshape(rows, columns)
