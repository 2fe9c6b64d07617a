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


def _is_encoder_only(model_type: str) -> bool:
    # BERT-like types also have *ForCausalLM classes in the mapping, but a bare
    # checkpoint of theirs (BertModel, or no head) is an encoder for embeddings.
    return model_type in {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "mpnet",
                          "distilbert", "deberta", "deberta-v2", "modernbert", "nomic_bert"}


def auto_class(kind: str):
    import transformers

    return {
        CAUSAL_LM: transformers.AutoModelForCausalLM,
        SEQ2SEQ: transformers.AutoModelForSeq2SeqLM,
        SEQUENCE_CLASSIFIER: transformers.AutoModelForSequenceClassification,
        EMBEDDING: transformers.AutoModel,
    }[kind]
