"""Other libraries' warnings, logs and progress bars: off the user's terminal unless -v.

stderr carries gptcli's own lines (``console``). torch, transformers, huggingface_hub
and friends speak through Python warnings (FutureWarning, Marian's "Recommended: pip
install sacremoses"), through their own loggers, and through tqdm bars (transformers'
"Writing model shards", datasets' "Generating train split"); ``configure`` sets all
three, once, at start-up, before any of them is imported, and again if ``-v`` comes
after the command.
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


# Progress bars, each library's read from its variable when it is first imported (transformers
# follows huggingface_hub's; tqdm's own, for bars drawn with plain tqdm, when tqdm is).
_BAR_VARIABLES = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")
_bars_hidden_by_us: set[str] = set()
_verbose = False


def configure(verbose: bool) -> None:
    """Hide third-party warnings, progress bars and log lines below errors; with ``verbose``, let them through."""
    global _verbose
    _verbose = verbose
    _python_warnings(verbose)
    _progress_bars(verbose)
    level = logging.WARNING if verbose else logging.ERROR
    # Loggers without a level of their own (accelerate, peft, torch) inherit the root's, and with
    # no handler configured Python prints their warnings to stderr.
    logging.getLogger().setLevel(level)
    for library, variable in _OWN_LOGGERS.items():
        os.environ[variable] = logging.getLevelName(level).lower()
        if library in sys.modules:  # already imported (a second run in one process, as in tests)
            importlib.import_module(f"{library}.utils.logging").set_verbosity(level)


def verbose() -> bool:
    """Whether third-party lines are let through (-v): for the environment of a child process too."""
    return _verbose


def _python_warnings(verbose: bool) -> None:
    if sys.warnoptions:  # the user chose with -W or PYTHONWARNINGS: theirs wins
        return
    # "default": each warning once per place, DeprecationWarnings included; inserted first, so it
    # also undoes an earlier "ignore" when -v comes after the command name.
    warnings.simplefilter("default" if verbose else "ignore")


def _progress_bars(verbose: bool) -> None:
    for variable in _BAR_VARIABLES:
        if not verbose and variable not in os.environ:  # one the user set is theirs: left as it is
            os.environ[variable] = "1"
            _bars_hidden_by_us.add(variable)
        elif verbose and variable in _bars_hidden_by_us:
            del os.environ[variable]
            _bars_hidden_by_us.discard(variable)
    _imported_bars(verbose)


def _imported_bars(verbose: bool) -> None:
    """Libraries imported before this call (a second run in one process) have read their variable already."""
    with warnings.catch_warnings():  # "the environment variable has priority": then it stays as it was
        warnings.simplefilter("ignore")
        if "huggingface_hub" in sys.modules:
            hub = importlib.import_module("huggingface_hub.utils")
            (hub.enable_progress_bars if verbose else hub.disable_progress_bars)()
        if "transformers" in sys.modules:
            logs = importlib.import_module("transformers.utils.logging")
            (logs.enable_progress_bar if verbose else logs.disable_progress_bar)()
        if "datasets" in sys.modules:
            bars = importlib.import_module("datasets.utils")
            (bars.enable_progress_bars if verbose else bars.disable_progress_bars)()
