"""What kind of model a config describes, so each command can check it got the right one."""

from __future__ import annotations

CAUSAL_LM = "causal-lm"
SEQ2SEQ = "seq2seq"
SEQUENCE_CLASSIFIER = "sequence-classifier"
EMBEDDING = "embedding"

KIND_NAMES = {
    CAUSAL_LM: "a causal language model",
    SEQ2SEQ: "an encoder-decoder (seq2seq) model",
    SEQUENCE_CLASSIFIER: "a sequence classifier",
    EMBEDDING: "an embedding (encoder-only) model",
}


def detect_kind(config) -> str:
    """The kind of model, from the config alone (architectures first, then model_type)."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)

    architectures = list(getattr(config, "architectures", None) or [])
    if any(name.endswith("ForSequenceClassification") for name in architectures):
        return SEQUENCE_CLASSIFIER
    if getattr(config, "is_encoder_decoder", False):
        return SEQ2SEQ
    if any(name.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for name in architectures):
        return CAUSAL_LM
    model_type = getattr(config, "model_type", "")
    if model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return SEQ2SEQ
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not _is_encoder_only(model_type):
        return CAUSAL_LM
    return EMBEDDING


def takes_images(config) -> bool:
    """True for an image-text-to-text model (SmolVLM, LLaVA, Qwen2-VL, Gemma 3 ...): a vision tower
    under a text decoder, loaded with its processor. Such a model is a causal LM that also sees images."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    if getattr(config, "vision_config", None) is None or getattr(config, "is_encoder_decoder", False):
        return False
    return getattr(config, "model_type", "") in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


VISION_MODELS_HINT = ("an image-text-to-text model such as HuggingFaceTB/SmolVLM-256M-Instruct, "
                      "llava-hf/llava-1.5-7b-hf or google/gemma-3-4b-it")


def _is_encoder_only(model_type: str) -> bool:
    # BERT-like types also have *ForCausalLM classes in the mapping, but a bare
    # checkpoint of theirs (BertModel, or no head) is an encoder for embeddings.
    return model_type in {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "mpnet",
                          "distilbert", "deberta", "deberta-v2", "modernbert", "nomic_bert"}


def auto_class(kind: str, images: bool = False):
    import transformers

    if images:
        return transformers.AutoModelForImageTextToText

    return {
        CAUSAL_LM: transformers.AutoModelForCausalLM,
        SEQ2SEQ: transformers.AutoModelForSeq2SeqLM,
        SEQUENCE_CLASSIFIER: transformers.AutoModelForSequenceClassification,
        EMBEDDING: transformers.AutoModel,
    }[kind]
