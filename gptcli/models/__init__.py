"""Model specs in, loaded (model, tokenizer) out: the one loader every command uses."""

from gptcli.models.loader import LoadedModel, LoadOptions, load_model

__all__ = ["LoadedModel", "LoadOptions", "load_model"]
