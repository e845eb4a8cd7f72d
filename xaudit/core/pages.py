"""Handing the pages of a file-mapped array back to the kernel, so they leave the resident set.

A big cohort's downsampled maps and images live in an unlinked file mapped into memory
(`xaudit.data.cohort.spilled`). Pages that were written or read stay in the process's
resident set (RSS) until the process ends, though they are the file's and the kernel could
drop them: at 10,000 subjects of 16^3 that was 480 MiB of RSS beside 470 MiB of the run's
own (anonymous) memory, and a scheduler that accounts RSS (SLURM's ``jobacct_gather``) counts
them against the job. `release_pages` unmaps them with ``madvise(MADV_DONTNEED)``: on a shared
file mapping the data stays in the file and the page cache, and the next access reads it back
(Linux semantics, madvise(2); elsewhere it does nothing). `row_blocks` walks an array a
block of rows at a time and releases each block after use, so a pass over every row keeps
one block resident, not the array.
"""

from __future__ import annotations

import mmap
import sys
from collections.abc import Iterator

import numpy as np

BLOCK_BYTES = 16 * 2**20  # rows per block of `row_blocks`: about this many bytes


def _mapping(array: np.ndarray) -> mmap.mmap | None:
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    found = getattr(base, "_mmap", None)
    return found if isinstance(found, mmap.mmap) else None


def release_pages(*arrays: np.ndarray) -> None:
    """Drop the resident pages of every array that views a shared file mapping (Linux only).

    The data is kept (in the file and the page cache); an array in memory is left alone.
    """
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    for array in arrays:
        mapping = _mapping(array) if isinstance(array, np.ndarray) else None
        if mapping is None:
            continue
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # closed, or refused: the pages merely stay
            pass


def row_blocks(array: np.ndarray, block_bytes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, array[start:stop])`` over the rows, about ``block_bytes`` at a time; a file-mapped
    array's pages are released after each block (`release_pages`)."""
    row = max(1, array[:1].nbytes)
    step = max(1, (BLOCK_BYTES if block_bytes is None else block_bytes) // row)
    for start in range(0, len(array), step):
        yield start, array[start:start + step]
        release_pages(array)


def take_rows(array: np.ndarray, index: np.ndarray, block_bytes: int | None = None) -> np.ndarray:
    """``array[index]`` (a copy, rows in ``index`` order), gathered a block of rows at a time with
    the pages of a file-mapped array released after each block.

    Reading a row maps the pages around it as well (the kernel's fault-around, 64 KiB), so an
    even draw of every fifth row made all of a 150 MiB array resident; in blocks, at most the
    rows one block spans are (a quarter of `BLOCK_BYTES` of output per block).
    """
    index = np.asarray(index)
    if _mapping(array) is None:
        return array[index]
    out = np.empty((len(index), *array.shape[1:]), array.dtype)
    row = max(1, array[:1].nbytes)
    step = max(1, ((BLOCK_BYTES // 4) if block_bytes is None else block_bytes) // row)
    for start in range(0, len(index), step):
        out[start:start + step] = array[index[start:start + step]]
        release_pages(array)
    return out
