"""
Printable fragments: extracting them from object bytes and tallying them.

A *fragment* is a maximal run of printable ASCII bytes (0x20 to 0x7e) inside
one object's bytes, or inside one window of memory next to an object. Runs
never cross an object boundary: the bytes of two neighbouring objects are two
fragments, as they are two allocations.

Extraction works on a batch of objects at once: a 2-D ``uint8`` array with one
row per object. The run boundaries, the fragment texts and their counts are all
found with numpy, so the per-object cost is a few array operations, not a
Python loop. :func:`printable_runs` is the plain reference implementation the
tests compare with.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

#: Default shortest run worth counting. Three keeps the story's ``tmp`` and
#: ``usr``; docs/extraction.md measures what two would add in noise.
DEFAULT_MIN_LENGTH = 3

#: How many example object addresses each fragment keeps (the lowest ones).
EXAMPLES = 5

_PRINTABLE = np.zeros(256, dtype=bool)
_PRINTABLE[0x20:0x7F] = True

_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]+")


def printable_runs(
    data: bytes, min_length: int = DEFAULT_MIN_LENGTH
) -> Iterator[tuple[int, bytes]]:
    """
    Yield ``(offset, text)`` for each maximal printable run in *data* of at
    least *min_length* bytes. This is the scalar reference for
    :func:`find_runs`, and what ``strings`` or crash's ``rd -a`` would show.
    """
    for match in _PRINTABLE_RUN.finditer(data):
        if match.end() - match.start() >= min_length:
            yield match.start(), match.group()


class Runs(NamedTuple):
    """The printable runs found in a batch of rows, one entry per run."""

    row: npt.NDArray[np.intp]
    offset: npt.NDArray[np.intp]
    length: npt.NDArray[np.intp]
    #: Run bytes as fixed-width ``S`` strings; numpy drops the NUL padding.
    text: npt.NDArray[np.bytes_]


# Gather at most this many bytes at once when copying run texts out.
_GATHER_BYTES = 16 << 20


def find_runs(rows: npt.NDArray[np.uint8], min_length: int = DEFAULT_MIN_LENGTH) -> Runs:
    """
    Find every printable run of at least *min_length* bytes in each row of
    *rows* (shape ``(objects, bytes_per_object)``). Runs stop at row ends.
    """
    if min_length < 1:
        raise ValueError("min_length must be at least 1")
    n, width = rows.shape
    if n == 0 or width == 0:
        empty = np.zeros(0, dtype=np.intp)
        return Runs(empty, empty, empty, np.zeros(0, dtype="S1"))
    # One non-printable column on each side of every row, so that runs end at
    # row boundaries and every start has a matching end.
    padded = np.zeros((n, width + 2), dtype=np.int8)
    padded[:, 1:-1] = _PRINTABLE[rows]
    edges = np.diff(padded.ravel())
    starts = np.flatnonzero(edges == 1) + 1
    ends = np.flatnonzero(edges == -1) + 1
    lengths = ends - starts
    keep = lengths >= min_length
    starts, lengths = starts[keep], lengths[keep]
    row = starts // (width + 2)
    offset = starts % (width + 2) - 1
    return Runs(row, offset, lengths, _gather_texts(rows, row, offset, lengths))


def _gather_texts(
    rows: npt.NDArray[np.uint8],
    row: npt.NDArray[np.intp],
    offset: npt.NDArray[np.intp],
    length: npt.NDArray[np.intp],
) -> npt.NDArray[np.bytes_]:
    """Copy each run out of *rows* as a NUL-padded fixed-width string."""
    if len(row) == 0:
        return np.zeros(0, dtype="S1")
    wide = int(length.max())
    out = np.zeros((len(row), wide), dtype=np.uint8)
    step = max(1, _GATHER_BYTES // wide)
    cols = np.arange(wide)
    last = rows.shape[1] - 1
    for lo in range(0, len(row), step):
        hi = lo + step
        index = offset[lo:hi, None] + cols
        block = rows[row[lo:hi, None], np.minimum(index, last)]
        block[cols >= length[lo:hi, None]] = 0
        out[lo:hi] = block
    return out.view(f"S{wide}").ravel()


@dataclass
class Fragment:
    """What is known of one fragment text across the whole walk."""

    text: bytes
    #: Allocated objects whose own bytes hold the fragment as a whole run.
    objects: int = 0
    #: Runs inside objects (an object can hold the same text twice).
    occurrences: int = 0
    #: Runs in the memory next to objects (the context windows).
    in_context: int = 0
    #: Offset inside the object -> number of runs there.
    offsets: Counter[int] = field(default_factory=Counter)
    #: The lowest object addresses holding the fragment, ascending.
    examples: list[int] = field(default_factory=list)

    def add_examples(self, addresses: list[int]) -> None:
        """Keep the :data:`EXAMPLES` lowest distinct addresses seen so far."""
        merged = sorted(set(self.examples).union(addresses))
        self.examples = merged[:EXAMPLES]


class FragmentTally:
    """
    Exact counts of every fragment, fed one batch of objects at a time.

    Batches can come in any order and from several workers; :meth:`merge`
    adds two tallies, and the result does not depend on the order.
    """

    def __init__(self) -> None:
        self.fragments: dict[bytes, Fragment] = {}

    def _get(self, text: bytes) -> Fragment:
        fragment = self.fragments.get(text)
        if fragment is None:
            fragment = self.fragments[text] = Fragment(text)
        return fragment

    def add_objects(
        self,
        rows: npt.NDArray[np.uint8],
        addresses: npt.NDArray[np.uint64],
        min_length: int = DEFAULT_MIN_LENGTH,
    ) -> None:
        """
        Count the fragments in a batch of objects: row ``i`` of *rows* is the
        bytes of the object at ``addresses[i]``.
        """
        runs = find_runs(rows, min_length)
        if len(runs.row) == 0:
            return
        texts, which, occurrences = np.unique(runs.text, return_inverse=True, return_counts=True)
        n = rows.shape[0]
        # Distinct (fragment, object) pairs give the object counts and examples.
        pairs = np.unique(which.astype(np.int64) * n + runs.row)
        pair_text = pairs // n
        pair_row = pairs % n
        objects = np.bincount(pair_text, minlength=len(texts))
        # Rows arrive in address order within a batch only by convention, so
        # sort the pair addresses explicitly before taking the lowest ones.
        pair_addr = addresses[pair_row]
        order = np.lexsort((pair_addr, pair_text))
        first = np.searchsorted(pair_text[order], np.arange(len(texts)))
        width = rows.shape[1]
        where = np.unique(which.astype(np.int64) * width + runs.offset, return_counts=True)
        offsets_by_text: dict[int, list[tuple[int, int]]] = {}
        for key, count in zip(where[0].tolist(), where[1].tolist(), strict=True):
            offsets_by_text.setdefault(key // width, []).append((key % width, count))
        sorted_addr = pair_addr[order]
        for i, text in enumerate(texts.tolist()):
            fragment = self._get(text)
            fragment.objects += int(objects[i])
            fragment.occurrences += int(occurrences[i])
            for offset, count in offsets_by_text[i]:
                fragment.offsets[offset] += count
            lo = int(first[i])
            fragment.add_examples(sorted_addr[lo : lo + min(EXAMPLES, int(objects[i]))].tolist())

    def add_context(
        self, rows: npt.NDArray[np.uint8], min_length: int = DEFAULT_MIN_LENGTH
    ) -> None:
        """Count the fragments in a batch of context windows (one per row)."""
        runs = find_runs(rows, min_length)
        if len(runs.row) == 0:
            return
        texts, counts = np.unique(runs.text, return_counts=True)
        for text, count in zip(texts.tolist(), counts.tolist(), strict=True):
            self._get(text).in_context += count

    def merge(self, other: FragmentTally) -> None:
        """Add every count of *other* into this tally."""
        for text, theirs in other.fragments.items():
            ours = self._get(text)
            ours.objects += theirs.objects
            ours.occurrences += theirs.occurrences
            ours.in_context += theirs.in_context
            ours.offsets.update(theirs.offsets)
            ours.add_examples(theirs.examples)
