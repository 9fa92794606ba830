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
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

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
    printable = (rows - np.uint8(0x20)) < np.uint8(0x7F - 0x20)
    # A run starts at a printable byte with no printable byte before it in
    # the row, and ends at one with none after it: runs stop at row ends.
    # (For booleans, a > b is a and not b: one pass, no temporaries.)
    first = np.empty_like(printable)
    first[:, 0] = printable[:, 0]
    np.greater(printable[:, 1:], printable[:, :-1], out=first[:, 1:])
    last = np.empty_like(printable)
    last[:, -1] = printable[:, -1]
    np.greater(printable[:, :-1], printable[:, 1:], out=last[:, :-1])
    starts = np.flatnonzero(first)
    lengths = np.flatnonzero(last) - starts + 1
    keep = lengths >= min_length
    starts, lengths = starts[keep], lengths[keep]
    row = starts // width
    offset = starts % width
    return Runs(row, offset, lengths, _gather_texts(rows, row, offset, lengths))


def _gather_texts(
    rows: npt.NDArray[np.uint8],
    row: npt.NDArray[np.intp],
    offset: npt.NDArray[np.intp],
    length: npt.NDArray[np.intp],
) -> npt.NDArray[np.bytes_]:
    """
    Copy each run out of *rows* as a NUL-padded fixed-width string, padded to
    a multiple of 8 bytes so that :func:`group_texts` can hash it by words.
    """
    if len(row) == 0:
        return np.zeros(0, dtype="S8")
    wide = -(-int(length.max()) // 8) * 8
    width = rows.shape[1]
    flat = np.ascontiguousarray(rows).ravel()
    start = row * width + offset
    # Runs near the end, where a whole window would overrun the rows, are
    # read from a padded copy of the last bytes; the rest straight from rows.
    tail_from = max(0, flat.size - 2 * wide)
    tail = np.zeros(flat.size - tail_from + wide, dtype=np.uint8)
    tail[: flat.size - tail_from] = flat[tail_from:]
    near_end = start >= tail_from
    # Each run is one row of a sliding window over the bytes: copying it out
    # is one memcpy per run, not a gather per byte.
    view = np.lib.stride_tricks.sliding_window_view
    windows = view(flat, wide) if tail_from else None
    tail_windows = view(tail, wide)
    out = np.empty((len(row), wide), dtype=np.uint8)
    cols = np.arange(wide, dtype=np.intp)
    step = max(1, _GATHER_BYTES // wide)
    for lo in range(0, len(row), step):
        hi = lo + step
        near, first = near_end[lo:hi], start[lo:hi]
        block = out[lo:hi]
        if windows is not None and not near.any():
            block[:] = windows[first]
        else:
            if windows is not None:
                block[~near] = windows[first[~near]]
            block[near] = tail_windows[first[near] - tail_from]
        block *= cols < length[lo:hi, None]
    return out.view(f"S{wide}").ravel()


_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _unique_unsorted(values: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[Any], ...]:
    """np.unique with first index, inverse and counts; unsorted where numpy can."""
    try:
        return tuple(
            np.unique(
                values, return_index=True, return_inverse=True, return_counts=True, sorted=False
            )
        )
    except TypeError:  # numpy < 2.3 has no sorted=False.
        return tuple(np.unique(values, return_index=True, return_inverse=True, return_counts=True))


def group_texts(
    texts: npt.NDArray[np.bytes_],
) -> tuple[npt.NDArray[np.bytes_], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """
    Group equal texts: the distinct texts, which of them each input is, and
    how many times each occurs. Texts are grouped by a 64-bit hash of their
    words, which is much faster than sorting strings; the grouping is then
    checked against the texts themselves, and redone by sorting in the
    unlikely case of a collision, so it is always exact.
    """
    words = texts.view(np.uint64).reshape(len(texts), -1)
    digest = np.zeros(len(texts), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for column in words.T:
            digest = (digest ^ column) * _HASH_MULTIPLIER
            digest ^= digest >> np.uint64(29)
    _, first, which, counts = _unique_unsorted(digest)
    distinct = texts[first]
    if not np.array_equal(distinct[which], texts):
        distinct, which, counts = np.unique(texts, return_inverse=True, return_counts=True)
    return distinct, which.ravel(), counts


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
        if not self.examples and len(addresses) <= EXAMPLES:
            self.examples = sorted(set(addresses))
            return
        merged = sorted(set(self.examples).union(addresses))
        self.examples = merged[:EXAMPLES]


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
    objects: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    offsets: dict[int, dict[int, int]] = field(default_factory=dict)
    #: Per run: its row and text index, and the rows' addresses, for examples.
    row: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, np.intp))
    which: npt.NDArray[np.intp] = field(default_factory=lambda: np.zeros(0, np.intp))
    addresses: npt.NDArray[np.uint64] = field(default_factory=lambda: np.zeros(0, np.uint64))


def count_objects(
    rows: npt.NDArray[np.uint8],
    addresses: npt.NDArray[np.uint64],
    min_length: int = DEFAULT_MIN_LENGTH,
) -> BatchCounts:
    """Count the fragments of a batch of objects (row ``i`` at ``addresses[i]``)."""
    runs = find_runs(rows, min_length)
    if len(runs.row) == 0:
        return BatchCounts([], np.zeros(0, np.int64))
    texts, which, occurrences = group_texts(runs.text)
    repeats = _repeats_in_objects(runs.row, which, rows.shape[0], len(texts))
    return BatchCounts(
        texts=texts.tolist(),
        occurrences=occurrences.astype(np.int64),
        objects=(occurrences - repeats).astype(np.int64),
        offsets=_offset_counts(which, runs.offset, rows.shape[1], len(texts)),
        row=runs.row,
        which=which,
        addresses=addresses,
    )


def count_context(rows: npt.NDArray[np.uint8], min_length: int = DEFAULT_MIN_LENGTH) -> BatchCounts:
    """Count the fragments of a batch of context windows (one per row)."""
    runs = find_runs(rows, min_length)
    if len(runs.row) == 0:
        return BatchCounts([], np.zeros(0, np.int64), context=True)
    texts, _, hits = group_texts(runs.text)
    return BatchCounts(texts.tolist(), hits.astype(np.int64), context=True)


#: Distinct fragments a tally keeps before it drops the rarest (about
#: 0.5 KiB of memory each).
DEFAULT_MAX_FRAGMENTS = 1_000_000


class FragmentTally:
    """
    Counts of every fragment, fed one batch of objects at a time.

    Counts are exact while the tally holds at most *max_fragments* distinct
    texts. Past that, it keeps the heavy hitters by lossy counting: the
    rarest fragments (by occurrences plus context hits) are dropped until half
    the room is free, and :attr:`error_bound` grows by the largest count
    dropped. A fragment still in the tally is then short of its true count by
    at most :attr:`error_bound`, in objects, occurrences and context hits
    alike, and a fragment with a true count above the bound is never lost.

    Batches can come in any order and from several workers; :meth:`merge`
    adds two tallies, and while exact the result does not depend on the order.
    """

    def __init__(self, max_fragments: int | None = DEFAULT_MAX_FRAGMENTS) -> None:
        self.fragments: dict[bytes, Fragment] = {}
        self.max_fragments = max_fragments
        #: How many counts any kept fragment may be short by; 0 while exact.
        self.error_bound = 0
        #: Distinct fragments dropped (a text dropped twice counts twice).
        self.dropped_fragments = 0

    @property
    def exact(self) -> bool:
        """True while no fragment was ever dropped."""
        return self.dropped_fragments == 0

    def _bound(self) -> None:
        """Drop the rarest fragments if the tally has grown past its bound."""
        if self.max_fragments is None or len(self.fragments) <= self.max_fragments:
            return
        weight = np.array(
            [f.occurrences + f.in_context for f in self.fragments.values()], dtype=np.int64
        )
        keep = max(1, self.max_fragments // 2)
        # Drop every fragment at or below the weight of the keep-th heaviest.
        threshold = int(np.partition(weight, len(weight) - keep)[len(weight) - keep])
        threshold = max(threshold, 1)
        dropped = [
            t for t, f in self.fragments.items() if f.occurrences + f.in_context <= threshold
        ]
        for text in dropped:
            del self.fragments[text]
        self.dropped_fragments += len(dropped)
        self.error_bound += threshold

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
        self.absorb(count_objects(rows, addresses, min_length))

    def add_context(
        self, rows: npt.NDArray[np.uint8], min_length: int = DEFAULT_MIN_LENGTH
    ) -> None:
        """Count the fragments in a batch of context windows (one per row)."""
        self.absorb(count_context(rows, min_length))

    def absorb(self, counts: BatchCounts) -> None:
        """Add a batch counted by :func:`count_objects` or :func:`count_context`."""
        if not counts.texts:
            return
        fragments = [self._get(text) for text in counts.texts]
        if counts.context:
            for fragment, hits in zip(fragments, counts.occurrences.tolist(), strict=True):
                fragment.in_context += hits
            self._bound()
            return
        examples = _lowest_objects(counts.row, counts.which, counts.addresses, fragments)
        objects, occurrences = counts.objects.tolist(), counts.occurrences.tolist()
        for i, fragment in enumerate(fragments):
            fragment.objects += objects[i]
            fragment.occurrences += occurrences[i]
            fragment.offsets.update(counts.offsets.get(i, {}))
            if i in examples:
                fragment.add_examples(examples[i])
        self._bound()

    def merge(self, other: FragmentTally) -> None:
        """Add every count of *other* into this tally."""
        for text, theirs in other.fragments.items():
            ours = self._get(text)
            ours.objects += theirs.objects
            ours.occurrences += theirs.occurrences
            ours.in_context += theirs.in_context
            ours.offsets.update(theirs.offsets)
            ours.add_examples(theirs.examples)
        self.error_bound += other.error_bound
        self.dropped_fragments += other.dropped_fragments
        self._bound()


def _repeats_in_objects(
    row: npt.NDArray[np.intp], which: npt.NDArray[np.intp], n_rows: int, n_texts: int
) -> npt.NDArray[np.int64]:
    """Per text, runs that repeat a text already found in the same object."""
    per_row = np.bincount(row, minlength=n_rows)
    several = per_row[row] >= 2
    if not several.any():
        return np.zeros(n_texts, dtype=np.int64)
    pairs, counts = np.unique(
        which[several].astype(np.int64) * n_rows + row[several], return_counts=True
    )
    return np.bincount(pairs // n_rows, weights=counts - 1, minlength=n_texts).astype(np.int64)


def _offset_counts(
    which: npt.NDArray[np.intp], offset: npt.NDArray[np.intp], width: int, n_texts: int
) -> dict[int, dict[int, int]]:
    """Per text index, offset -> runs at that offset."""
    keys = which.astype(np.int64) * width + offset
    if n_texts * width <= 1 << 24:
        counts = np.bincount(keys, minlength=n_texts * width)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, counts = np.unique(keys, return_counts=True)
    out: dict[int, dict[int, int]] = {}
    for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
        out.setdefault(key // width, {})[key % width] = count
    return out


def _lowest_objects(
    row: npt.NDArray[np.intp],
    which: npt.NDArray[np.intp],
    addresses: npt.NDArray[np.uint64],
    fragments: list[Fragment],
) -> dict[int, list[int]]:
    """
    Per text index, the lowest addresses of objects holding it, for the texts
    whose examples could still change: fewer than :data:`EXAMPLES`, or some
    higher than the lowest address in this batch. Walks go up in address, so
    after the first batches this is a handful of new texts, not all of them.
    """
    lowest = int(addresses.min())
    needy = np.array(
        [len(f.examples) < EXAMPLES or f.examples[-1] > lowest for f in fragments], dtype=bool
    )
    picked = np.flatnonzero(needy[which])
    if len(picked) == 0:
        return {}
    address = addresses[row[picked]]
    order = np.lexsort((address, which[picked]))
    text, address = which[picked][order], address[order]
    fresh = np.ones(len(text), dtype=bool)
    fresh[1:] = (text[1:] != text[:-1]) | (address[1:] != address[:-1])
    text, address = text[fresh], address[fresh]
    start = np.searchsorted(text, text, side="left")
    keep = np.arange(len(text)) - start < EXAMPLES
    out: dict[int, list[int]] = {}
    for i, a in zip(text[keep].tolist(), address[keep].tolist(), strict=True):
        out.setdefault(i, []).append(a)
    return out
