"""Give back the resident pages of weights that were read from a memory-mapped file and then copied.

transformers maps safetensors files into memory (privately: copy-on-write); a weight's pages become
resident as they are read. When gptcli copies weights into a new tensor (the lean decode step joins
q/k/v and gate/up), the originals' pages stay resident though nothing reads them any more: on the
default model, 115 MiB held twice. A page of a private file mapping that was never written is the
file's own page: dropping it (MADV_DONTNEED) loses nothing, since the kernel reads it back from the
file if it is touched again. Pages that were written (copied on write, now anonymous memory, per
/proc/self/pagemap) and anything outside a file mapping are left alone.
"""

from __future__ import annotations

import ctypes
import mmap
import struct
import sys

MADV_DONTNEED = 4  # linux/mman.h
FILE_PAGE = 1 << 61  # /proc/PID/pagemap: the page is a file page (or shared anonymous)
PRESENT = 1 << 63


def release(tensors) -> int:
    """Drop the resident, never-written file pages wholly inside ``tensors``' bytes; the bytes
    released (0 where nothing qualifies, and off Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    mappings = _private_file_mappings()
    if not mappings:
        return 0
    try:
        pagemap = open("/proc/self/pagemap", "rb")
    except OSError:
        return 0
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    released = 0
    with pagemap:
        for tensor in tensors:
            start = tensor.data_ptr()
            end = start + tensor.numel() * tensor.element_size()
            if any(low <= start and end <= high for low, high in mappings):
                released += _drop_file_pages(libc, pagemap, start, end)
    return released


def _drop_file_pages(libc, pagemap, start: int, end: int) -> int:
    size = mmap.PAGESIZE
    first, last = -(-start // size), end // size  # whole pages only: neighbours may share the edges
    if last <= first:
        return 0
    pagemap.seek(first * 8)
    entries = struct.unpack(f"{last - first}Q", pagemap.read((last - first) * 8))
    dropped, run = 0, None
    for index, entry in enumerate([*entries, 0]):  # a sentinel ends the last run
        droppable = entry & PRESENT and entry & FILE_PAGE
        if droppable and run is None:
            run = index
        elif not droppable and run is not None:
            address, length = (first + run) * size, (index - run) * size
            if libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length), MADV_DONTNEED) == 0:
                dropped += length
            run = None
    return dropped


def _private_file_mappings() -> list[tuple[int, int]]:
    """(start, end) of this process's private mappings of files."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    spans = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/") and fields[1].endswith("p"):
            low, high = (int(x, 16) for x in fields[0].split("-"))
            spans.append((low, high))
    return spans
