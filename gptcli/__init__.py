"""gptcli: Hugging Face language models from the terminal and in shell pipelines."""

__version__ = "0.1.0"
