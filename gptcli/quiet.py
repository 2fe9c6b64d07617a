"""Other libraries' warnings and logs: off the user's terminal unless -v.

stderr carries gptcli's own lines (``console``). torch, transformers, huggingface_hub
and friends speak through Python warnings (FutureWarning, Marian's "Recommended: pip
install sacremoses") and through their own loggers; ``configure`` sets both, once, at
start-up, before any of them is imported, and again if ``-v`` comes after the command.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings

# Libraries with their own log level, read from these variables when first imported.
_OWN_LOGGERS = {"transformers": "TRANSFORMERS_VERBOSITY", "huggingface_hub": "HF_HUB_VERBOSITY",
                "datasets": "DATASETS_VERBOSITY"}


def configure(verbose: bool) -> None:
    """Hide third-party warnings and log lines below errors; with ``verbose``, let them through."""
    _python_warnings(verbose)
    level = logging.WARNING if verbose else logging.ERROR
    # Loggers without a level of their own (accelerate, peft, torch) inherit the root's, and with
    # no handler configured Python prints their warnings to stderr.
    logging.getLogger().setLevel(level)
    for library, variable in _OWN_LOGGERS.items():
        os.environ[variable] = logging.getLevelName(level).lower()
        if library in sys.modules:  # already imported (a second run in one process, as in tests)
            importlib.import_module(f"{library}.utils.logging").set_verbosity(level)


def _python_warnings(verbose: bool) -> None:
    if sys.warnoptions:  # the user chose with -W or PYTHONWARNINGS: theirs wins
        return
    # "default": each warning once per place, DeprecationWarnings included; inserted first, so it
    # also undoes an earlier "ignore" when -v comes after the command name.
    warnings.simplefilter("default" if verbose else "ignore")
