r"""
Kernel pointers in object bytes: pointer bytes, never text.

A pointer's low bytes are sometimes printable, and which ones depends on the
boot (KASLR randomises the kernel's text, the direct map, vmemmap and
vmalloc space). A record that starts with a pointer into the direct map at
``0xffff8d34...`` holds the run ``\kz@`` or `` `0A`` in every copy; a leak
repeats them as often as its own strings, and they would lead the report
above them, and differ between two dumps of the same leak.

So an aligned 8-byte word whose value is a kernel address (its top 17 bits
set: the upper canonical half of x86-64, which holds the direct map,
vmemmap, vmalloc, the kernel image and modules) is *pointer bytes*: no run
lies inside it, and a run that reaches it ends there
(:func:`mask_kernel_pointers`; the scan does the same without a copy,
:func:`dumpminer.extract.fragments.scan_runs` with ``blank_pointers``).
This never cuts a string: the word's two top bytes are 0x80 or above, so its
only printable bytes are its six low ones, the pointer's own
(docs/extraction.md, "Pointer bytes", measures it on the samples).
``mine`` and ``diff`` always do this unless told ``--keep-pointers``.
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
