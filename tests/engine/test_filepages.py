"""Dropping the resident pages of a copied weight: only never-written pages of a private file mapping go,
and what is read afterwards is what was there (the file's bytes, and the written page as written)."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import pytest
import torch

from gptcli.engine import filepages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pagemap and madvise are Linux's")


def _resident_pages(array) -> int:
    """Pages of ``array`` present in memory, by /proc/self/pagemap."""
    start = array.ctypes.data // mmap.PAGESIZE
    count = array.nbytes // mmap.PAGESIZE
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(start * 8)
        entries = np.frombuffer(pagemap.read(count * 8), dtype=np.uint64)
    return int(((entries >> np.uint64(63)) & np.uint64(1)).sum())


def test_unwritten_file_pages_are_dropped_and_read_back_the_same(tmp_path):
    pages = 16
    values = np.arange(pages * mmap.PAGESIZE // 4, dtype=np.float32)
    path = tmp_path / "weights.bin"
    values.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="c")  # private, copy-on-write: as safetensors maps
    tensor = torch.from_numpy(mapped)
    assert float(tensor.sum()) == float(values.sum())  # every page read: resident
    written = mmap.PAGESIZE // 4 * 3
    tensor[written] = -1.0  # page 3 is now a private copy: its change must survive
    assert _resident_pages(mapped) == pages
    released = filepages.release([tensor])
    assert released == (pages - 1) * mmap.PAGESIZE  # all but the written page
    assert _resident_pages(mapped) == 1
    expected = values.copy()
    expected[written] = -1.0
    assert np.array_equal(np.asarray(mapped), expected)  # read back from the file, and the change kept


def test_memory_that_is_not_a_file_mapping_is_left_alone():
    tensor = torch.arange(4 * mmap.PAGESIZE, dtype=torch.float32)
    assert filepages.release([tensor]) == 0
    assert torch.equal(tensor, torch.arange(4 * mmap.PAGESIZE, dtype=torch.float32))
