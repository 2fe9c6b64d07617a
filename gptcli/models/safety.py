"""Refuse pickle-based weight files unless the user allows them.

Loading a pickle (``pytorch_model.bin``, ``*.pt``) can run arbitrary code from the file;
safetensors cannot. transformers already unpickles with ``weights_only=True``, but that is
a filter over a format made for code, not a format without it: we refuse such files
outright unless ``--allow-pickle`` is given.
"""

from __future__ import annotations

from pathlib import Path

from gptcli.errors import InputError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Pickles that transformers and peft never load as weights.
NOT_WEIGHTS = {"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}


def pickle_weights(folder: Path) -> list[str]:
    """The pickle weight files in ``folder`` when it holds no safetensors weights (sorted names)."""
    files = [path for path in folder.iterdir() if path.is_file()]
    if any(path.suffix == ".safetensors" for path in files):
        return []  # safetensors are preferred and loaded (use_safetensors=True); the pickles stay unread
    return sorted(path.name for path in files if path.suffix in PICKLE_SUFFIXES and path.name not in NOT_WEIGHTS)


def check_no_pickle(folder: Path, what: str, allow_pickle: bool) -> None:
    """Raise when ``folder``'s weights exist only as pickles and the user has not allowed that.

    Raises:
        InputError: naming the files and the two ways out.
    """
    if allow_pickle or not folder.is_dir():
        return
    pickles = pickle_weights(folder)
    if pickles:
        raise InputError(f"{what} {folder} holds its weights only as pickle files ({', '.join(pickles[:3])}), "
                         f"which can run code when loaded; convert them to safetensors, or rerun with "
                         f"--allow-pickle if you trust the source")
