"""
Kernel pointers in object bytes: the noise that KASLR puts between two boots.

A pointer's low bytes change from boot to boot (the kernel's text, the
direct map and vmalloc space are all randomised), and some of them are
printable, so the runs they make (``d}@l``) would differ between two dumps
of the same leak. ``dumpminer diff`` mines with such words blanked: every
aligned 8-byte word whose value is a kernel address (its top 17 bits set,
the upper canonical half of x86-64) becomes zero before runs are found. A
run that ends at a pointer then ends there too. ``mine`` does not do this
by default only where those runs would swamp its tally
(:mod:`dumpminer.scan.pointernoise` decides), so its counts stay the raw ones on
other dumps; ``--mask-pointers`` and ``--keep-pointers`` decide instead.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: The lowest kernel address on x86-64 (upper canonical half, 4- and 5-level paging).
KERNEL_SPACE_START = 0xFFFF_8000_0000_0000
WORD = 8


def kernel_address_words(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    """Which of *words* (little-endian values) are kernel addresses."""
    return words >= np.uint64(KERNEL_SPACE_START)


def mask_kernel_pointers(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """
    A copy of *rows* (one object per row, each starting 8-byte aligned, as
    every slab object on x86-64 does) with every aligned word that holds a
    kernel address set to zero. Bytes after the last whole word are kept.
    """
    return _blank_words(rows, kernel=True)


def kernel_pointer_bytes(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """
    The converse of :func:`mask_kernel_pointers`: a copy of *rows* that keeps
    only the aligned words holding a kernel address, every other byte set to
    zero. The runs found in it are the runs a pointer's own bytes make: what
    :func:`mask_kernel_pointers` would take away.
    """
    return _blank_words(rows, kernel=False)


def _blank_words(rows: npt.NDArray[np.uint8], kernel: bool) -> npt.NDArray[np.uint8]:
    """
    A copy of *rows* with the aligned words that hold a kernel address
    (*kernel*) or the others set to zero; with the others, so are the bytes
    after the last whole word.
    """
    out = np.array(rows, dtype=np.uint8, order="C", copy=True)
    n, size = out.shape
    width = size // WORD * WORD
    if not kernel:
        out[:, width:] = 0
    if width == 0 or n == 0:
        return out
    words = np.ascontiguousarray(out[:, :width]).view("<u8")
    words[kernel_address_words(words) == kernel] = 0
    out[:, :width] = words.view(np.uint8).reshape(n, width)
    return out
