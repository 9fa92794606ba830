"""
Printable fragments: extracting them from object bytes and counting a batch.

A *fragment* is a maximal run of printable ASCII bytes (0x20 to 0x7e) inside
one object's bytes, or inside one window of memory next to an object. Runs
never cross an object boundary: the bytes of two neighbouring objects are two
fragments, as they are two allocations.

Extraction works on a batch of objects at once: a 2-D ``uint8`` array with one
row per object. :func:`scan_runs` finds the runs of the whole batch and groups
equal texts in one pass of compiled code (dumpminer/extract/_runs.c) that runs with
the GIL released, so it overlaps with the walk reading the next slabs; the
counts of a batch (:class:`BatchCounts`) then join a
:class:`~dumpminer.clustering.tally.FragmentTally`. :func:`printable_runs` is the plain
reference implementation the tests compare with.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from dumpminer.extract import _runs

#: Default shortest run worth counting. Three keeps the story's ``tmp`` and
#: ``usr``; docs/extraction.md measures what two would add in noise.
DEFAULT_MIN_LENGTH = 3

#: How many example object addresses each fragment keeps (the lowest ones).
EXAMPLES = 5

_PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]+")


def printable_runs(
    data: bytes, min_length: int = DEFAULT_MIN_LENGTH
) -> Iterator[tuple[int, bytes]]:
    """
    Yield ``(offset, text)`` for each maximal printable run in *data* of at
    least *min_length* bytes. This is the plain reference for
    :func:`scan_runs`, and what ``strings`` or crash's ``rd -a`` would show.
    """
    for match in _PRINTABLE_RUN.finditer(data):
        if match.end() - match.start() >= min_length:
            yield match.start(), match.group()


class Scan(NamedTuple):
    """The printable runs of a batch of rows, and their distinct texts."""

    #: Per run, in row order: its row, its offset in the row, and its text
    #: (an index into ``texts``).
    row: npt.NDArray[np.int64]
    offset: npt.NDArray[np.int64]
    which: npt.NDArray[np.int64]
    #: The distinct texts, in order of first appearance.
    texts: list[bytes]
    #: Per text: runs, and rows holding it.
    occurrences: npt.NDArray[np.int64]
    objects: npt.NDArray[np.int64]
    #: Per text, the lowest addresses of rows holding it, ascending, padded
    #: with _NO_ADDRESS: shape ``(texts, EXAMPLES)`` (no rows without addresses).
    examples: npt.NDArray[np.uint64]
    #: Per distinct (text, offset in the row): the text, the offset, and how
    #: many runs of the text start there.
    offset_text: npt.NDArray[np.int64]
    offset_at: npt.NDArray[np.int64]
    offset_runs: npt.NDArray[np.int64]
    #: With slab_of_row, per distinct (text, slab): the text, the slab, and
    #: how many rows of the slab hold the text.
    slab_text: npt.NDArray[np.int64]
    slab_index: npt.NDArray[np.int64]
    slab_objects: npt.NDArray[np.int64]
    #: With *blank_pointers*: runs of at least min_length bytes left out
    #: because they lay inside a word holding a kernel address.
    pointer_runs: int = 0


#: "No example here" in the examples tables (no object lives at this address).
_NO_ADDRESS = np.uint64(2**64 - 1)


def scan_runs(
    rows: npt.NDArray[np.uint8],
    min_length: int = DEFAULT_MIN_LENGTH,
    addresses: npt.NDArray[np.uint64] | None = None,
    hash_bits: int = 64,
    slab_of_row: npt.NDArray[np.int64] | None = None,
    keep_runs: bool = True,
    blank_pointers: bool = False,
) -> Scan:
    """
    Find every printable run of at least *min_length* bytes in each row of
    *rows* (shape ``(rows, bytes_per_row)``; runs stop at row ends), group
    equal texts exactly, and count runs and rows per text and runs per
    (text, offset). With *addresses* (one per row), also keep each text's
    lowest addresses; with *slab_of_row* (the slab index of each row), count
    rows per (text, slab). *hash_bits* below 64 weakens the hash that groups
    texts, for tests of its collisions. Without *keep_runs*, the per-run
    columns (``row``, ``offset``, ``which``) come back empty: counting needs
    only the per-text columns, and the per-run ones are most of the memory a
    batch writes.

    With *blank_pointers* (rows must start 8-byte aligned, as slab objects
    do), the bytes of every aligned word holding a kernel address count as
    not printable: the runs are those of
    :func:`~dumpminer.extract.pointers.mask_kernel_pointers` of *rows*,
    found without copying them, and ``pointer_runs`` says how many runs
    that left out (docs/extraction.md, "Pointer bytes").
    """
    if min_length < 1:
        raise ValueError("min_length must be at least 1")
    n, width = rows.shape
    if n == 0 or width == 0:
        empty = np.zeros(0, dtype=np.int64)
        no_examples = np.zeros((0, EXAMPLES), np.uint64)
        return Scan(empty, empty, empty, [], empty, empty, no_examples, *(empty,) * 6)
    data = np.ascontiguousarray(rows, dtype=np.uint8)
    where = None if addresses is None else np.ascontiguousarray(addresses, dtype=np.uint64)
    slabs = None if slab_of_row is None else np.ascontiguousarray(slab_of_row, dtype=np.int64)
    found = _runs.scan(
        data, width, min_length, where, EXAMPLES, hash_bits, slabs, keep_runs, blank_pointers
    )
    row, offset, which, texts, occurrences, objects, lowest = found[:7]
    at_text, at_offset, at_runs, slab_text, slab_index, slab_objects = (
        np.frombuffer(column, dtype=np.int64) for column in found[7:13]
    )
    return Scan(
        np.frombuffer(row, dtype=np.int64),
        np.frombuffer(offset, dtype=np.int64),
        np.frombuffer(which, dtype=np.int64),
        texts,
        np.frombuffer(occurrences, dtype=np.int64),
        np.frombuffer(objects, dtype=np.int64),
        np.frombuffer(lowest, dtype=np.uint64).reshape(-1, EXAMPLES)
        if addresses is not None
        else np.zeros((0, EXAMPLES), np.uint64),
        at_text,
        at_offset,
        at_runs,
        slab_text,
        slab_index,
        slab_objects,
        found[13],
    )


@dataclass(slots=True)
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
    offsets: dict[int, int] = field(default_factory=dict)
    #: The lowest object addresses holding the fragment, ascending.
    examples: list[int] = field(default_factory=list)
    #: With per-slab counts: sum over slabs of (objects in the slab holding
    #: the fragment)^2, and of that times the slab's allocated objects.
    slab_square: float = 0.0
    slab_cross: float = 0.0


_EMPTY_I64: npt.NDArray[np.int64] = np.zeros(0, np.int64)


@dataclass
class BatchCounts:
    """
    The fragment counts of one batch, before they join a tally. Counting is
    pure array work and may run on any thread; :meth:`FragmentTally.absorb`
    then adds the counts, in batch order, on one.
    """

    texts: list[bytes]
    occurrences: npt.NDArray[np.int64]
    #: True for context windows: only ``occurrences`` (hits) is meaningful.
    context: bool = False
    objects: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I64)
    #: (text index, offset, runs) triples.
    offset_text: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I64)
    offset_at: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I64)
    offset_runs: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I64)
    #: Per text, the lowest addresses of objects holding it, ascending,
    #: padded with _NO_ADDRESS: shape ``(texts, EXAMPLES)``.
    examples: npt.NDArray[np.uint64] = field(
        default_factory=lambda: np.zeros((0, EXAMPLES), np.uint64)
    )
    #: With per-slab counts (sampling): allocated objects of each slab of the
    #: batch, and (text index, slab index, objects) for every pair seen.
    slab_sizes: npt.NDArray[np.int64] | None = None
    slab_text: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I64)
    slab_index: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I64)
    slab_objects: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I64)
    #: With row labels (allocation call sites): each label's key, and
    #: (text index, label, objects) for every pair seen.
    label_keys: list[Hashable] = field(default_factory=list)
    label_text: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I64)
    label_index: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I64)
    label_objects: npt.NDArray[np.int64] = field(default_factory=lambda: _EMPTY_I64)
    #: Runs left out as pointer bytes (see :func:`scan_runs`).
    pointer_runs: int = 0


def count_objects(
    rows: npt.NDArray[np.uint8],
    addresses: npt.NDArray[np.uint64],
    min_length: int = DEFAULT_MIN_LENGTH,
    slab_of_row: npt.NDArray[np.int64] | None = None,
    slabs: int = 0,
    labels: tuple[npt.NDArray[np.int64], list[Hashable]] | None = None,
    blank_pointers: bool = True,
) -> BatchCounts:
    """
    Count the fragments of a batch of objects (row ``i`` at ``addresses[i]``).
    With *slab_of_row* (which of the batch's *slabs* each row is in), also
    count objects per fragment per slab, which sampling needs for honest
    intervals (:mod:`dumpminer.slub.sampling`). With *labels* (a label per row, in
    ``range(len(keys))``, and the keys), also count objects per fragment per
    label: the scan's (text, key) pair count serves both, on a combined key
    when both are asked for. Runs of kernel-pointer bytes are left out
    unless *blank_pointers* is False (:func:`scan_runs`).
    """
    sizes = None
    if slab_of_row is not None:
        sizes = np.bincount(slab_of_row, minlength=slabs).astype(np.int64)
    pair_key = slab_of_row
    width = 1
    if labels is not None:
        width = max(1, len(labels[1]))
        pair_key = labels[0] if slab_of_row is None else slab_of_row * width + labels[0]
    scan = scan_runs(
        rows,
        min_length,
        addresses,
        slab_of_row=pair_key,
        keep_runs=False,
        blank_pointers=blank_pointers,
    )
    if not scan.texts:
        return BatchCounts([], _EMPTY_I64, slab_sizes=sizes, pointer_runs=scan.pointer_runs)
    counts = BatchCounts(
        texts=scan.texts,
        occurrences=scan.occurrences,
        objects=scan.objects,
        offset_text=scan.offset_text,
        offset_at=scan.offset_at,
        offset_runs=scan.offset_runs,
        examples=scan.examples,
        slab_sizes=sizes,
        pointer_runs=scan.pointer_runs,
    )
    if labels is not None:
        counts.label_keys = labels[1]
        if slab_of_row is None:
            counts.label_text, counts.label_index = scan.slab_text, scan.slab_index
            counts.label_objects = scan.slab_objects
        else:
            counts.label_text, counts.label_index, counts.label_objects = _sum_pairs(
                scan.slab_text, scan.slab_index % width, scan.slab_objects
            )
            slab_text, slab_index, slab_objects = _sum_pairs(
                scan.slab_text, scan.slab_index // width, scan.slab_objects
            )
            counts.slab_text, counts.slab_index, counts.slab_objects = (
                slab_text,
                slab_index,
                slab_objects,
            )
            return counts
    if slab_of_row is not None:
        counts.slab_text, counts.slab_index = scan.slab_text, scan.slab_index
        counts.slab_objects = scan.slab_objects
    return counts


def _sum_pairs(
    text: npt.NDArray[np.int64], key: npt.NDArray[np.int64], objects: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Sum *objects* per distinct (text, key) pair (keys are small non-negative ints)."""
    span = int(key.max()) + 1 if len(key) else 1
    pairs, where = np.unique(text * span + key, return_inverse=True)
    total = np.bincount(where.ravel(), weights=objects, minlength=len(pairs)).astype(np.int64)
    return pairs // span, pairs % span, total


def count_context(
    rows: npt.NDArray[np.uint8],
    min_length: int = DEFAULT_MIN_LENGTH,
    blank_pointers: bool = False,
    misalign: int = 0,
) -> BatchCounts:
    """
    Count the fragments of a batch of context windows (one per row). With
    *blank_pointers*, runs of kernel-pointer bytes are left out as in
    objects; the windows then start *misalign* bytes (``address % 8``) past
    an aligned word, so each row is read after that many NUL bytes, which
    puts the words where they are in memory.
    """
    if blank_pointers and misalign % 8:
        rows = np.pad(rows, ((0, 0), (misalign % 8, 0)))
    scan = scan_runs(rows, min_length, keep_runs=False, blank_pointers=blank_pointers)
    if not scan.texts:
        return BatchCounts([], _EMPTY_I64, context=True)
    return BatchCounts(scan.texts, scan.occurrences, context=True)
