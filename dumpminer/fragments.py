"""
Printable fragments: extracting them from object bytes and tallying them.

A *fragment* is a maximal run of printable ASCII bytes (0x20 to 0x7e) inside
one object's bytes, or inside one window of memory next to an object. Runs
never cross an object boundary: the bytes of two neighbouring objects are two
fragments, as they are two allocations.

Extraction works on a batch of objects at once: a 2-D ``uint8`` array with one
row per object. :func:`scan_runs` finds the runs of the whole batch and groups
equal texts in one pass of compiled code (dumpminer/_runs.c) that runs with
the GIL released, so it overlaps with the walk reading the next slabs; the
tally is kept in numpy arrays. :func:`printable_runs` is the plain reference
implementation the tests compare with.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from dumpminer import _runs

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


#: "No example here" in the examples tables (no object lives at this address).
_NO_ADDRESS = np.uint64(2**64 - 1)


def scan_runs(
    rows: npt.NDArray[np.uint8],
    min_length: int = DEFAULT_MIN_LENGTH,
    addresses: npt.NDArray[np.uint64] | None = None,
    hash_bits: int = 64,
    slab_of_row: npt.NDArray[np.int64] | None = None,
) -> Scan:
    """
    Find every printable run of at least *min_length* bytes in each row of
    *rows* (shape ``(rows, bytes_per_row)``; runs stop at row ends), group
    equal texts exactly, and count runs and rows per text and runs per
    (text, offset). With *addresses* (one per row), also keep each text's
    lowest addresses; with *slab_of_row* (the slab index of each row), count
    rows per (text, slab). *hash_bits* below 64 weakens the hash that groups
    texts, for tests of its collisions.
    """
    if min_length < 1:
        raise ValueError("min_length must be at least 1")
    n, width = rows.shape
    if n == 0 or width == 0:
        empty = np.zeros(0, dtype=np.int64)
        no_examples = np.zeros((0, EXAMPLES), np.uint64)
        return Scan(empty, empty, empty, [], empty, empty, no_examples, *[empty] * 6)
    data = np.ascontiguousarray(rows, dtype=np.uint8)
    where = None if addresses is None else np.ascontiguousarray(addresses, dtype=np.uint64)
    slabs = None if slab_of_row is None else np.ascontiguousarray(slab_of_row, dtype=np.int64)
    row, offset, which, texts, occurrences, objects, lowest, *pairs = _runs.scan(
        data, width, min_length, where, EXAMPLES, hash_bits, slabs
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
        *(np.frombuffer(column, dtype=np.int64) for column in pairs),
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


def count_objects(
    rows: npt.NDArray[np.uint8],
    addresses: npt.NDArray[np.uint64],
    min_length: int = DEFAULT_MIN_LENGTH,
    slab_of_row: npt.NDArray[np.int64] | None = None,
    slabs: int = 0,
) -> BatchCounts:
    """
    Count the fragments of a batch of objects (row ``i`` at ``addresses[i]``).
    With *slab_of_row* (which of the batch's *slabs* each row is in), also
    count objects per fragment per slab, which sampling needs for honest
    intervals (:mod:`dumpminer.sampling`).
    """
    sizes = None
    if slab_of_row is not None:
        sizes = np.bincount(slab_of_row, minlength=slabs).astype(np.int64)
    scan = scan_runs(rows, min_length, addresses, slab_of_row=slab_of_row)
    if len(scan.row) == 0:
        return BatchCounts([], _EMPTY_I64, slab_sizes=sizes)
    counts = BatchCounts(
        texts=scan.texts,
        occurrences=scan.occurrences,
        objects=scan.objects,
        offset_text=scan.offset_text,
        offset_at=scan.offset_at,
        offset_runs=scan.offset_runs,
        examples=scan.examples,
        slab_sizes=sizes,
    )
    if slab_of_row is not None:
        counts.slab_text, counts.slab_index = scan.slab_text, scan.slab_index
        counts.slab_objects = scan.slab_objects
    return counts


def count_context(rows: npt.NDArray[np.uint8], min_length: int = DEFAULT_MIN_LENGTH) -> BatchCounts:
    """Count the fragments of a batch of context windows (one per row)."""
    scan = scan_runs(rows, min_length)
    if len(scan.row) == 0:
        return BatchCounts([], _EMPTY_I64, context=True)
    return BatchCounts(scan.texts, scan.occurrences, context=True)


#: Distinct fragments a tally keeps before it drops the rarest (about
#: 0.5 KiB of memory each once reported).
DEFAULT_MAX_FRAGMENTS = 1_000_000

class FragmentTally:
    """
    Counts of every fragment, fed one batch of objects at a time.

    The counts live in numpy arrays indexed by a fragment id, so adding a
    batch is a few array operations plus one dict lookup per distinct text;
    :attr:`fragments` builds the :class:`Fragment` objects once, at the end.

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

    def __init__(
        self,
        max_fragments: int | None = DEFAULT_MAX_FRAGMENTS,
        group_of: Callable[[bytes], Hashable] | None = None,
    ) -> None:
        self.max_fragments = max_fragments
        #: Names the group (cluster) of a text, for per-slab group sums.
        self.group_of = group_of
        #: Per-slab sums, with sampling: slabs, their objects, and objects^2.
        self.slabs_seen = 0
        self.slab_objects = 0
        self.slab_objects_square = 0
        #: Group key -> [sum of (group objects in a slab)^2, cross sum].
        self.group_spread: dict[Hashable, list[float]] = {}
        self._group_ids: dict[Hashable, int] = {}
        self._group_keys: list[Hashable] = []
        self._group_of_text = np.zeros(0, np.int64)
        self._slab_square = np.zeros(0, np.float64)
        self._slab_cross = np.zeros(0, np.float64)
        #: How many counts any kept fragment may be short by; 0 while exact.
        self.error_bound = 0
        #: Distinct fragments dropped (a text dropped twice counts twice).
        self.dropped_fragments = 0
        self._index: dict[bytes, int] = {}
        self._texts: list[bytes] = []
        self._objects = np.zeros(0, np.int64)
        self._occurrences = np.zeros(0, np.int64)
        self._in_context = np.zeros(0, np.int64)
        #: The lowest addresses of each fragment, ascending, padded with _NO_ADDRESS.
        self._examples = np.zeros((0, EXAMPLES), np.uint64)
        #: (fragment ids, offsets, runs) pieces, reduced now and then.
        self._offsets: list[tuple[npt.NDArray[np.int64], ...]] = []
        self._offset_entries = 0
        self._built: dict[bytes, Fragment] | None = None

    def __len__(self) -> int:
        return len(self._texts)

    @property
    def exact(self) -> bool:
        """True while no fragment was ever dropped."""
        return self.dropped_fragments == 0

    @property
    def fragments(self) -> dict[bytes, Fragment]:
        """Every fragment counted so far, by text."""
        if self._built is None:
            n = len(self._texts)
            ids, at, runs = self._reduced_offsets()
            # The reduced triples are sorted by id: each fragment's offsets
            # are one slice of them. Most fragments have one offset.
            bounds = np.searchsorted(ids, np.arange(n + 1))
            at_list, runs_list = at.tolist(), runs.tolist()
            offsets: list[dict[int, int]] = [
                {at_list[lo]: runs_list[lo]} if hi - lo == 1 else dict(
                    zip(at_list[lo:hi], runs_list[lo:hi], strict=True)
                )
                for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
            ]
            # Rows are ascending with the padding last: keep each row's head.
            table = self._examples[:n]
            kept = np.count_nonzero(table != _NO_ADDRESS, axis=1)
            examples = [row[:k] for row, k in zip(table.tolist(), kept.tolist(), strict=True)]
            fragments = map(
                Fragment,
                self._texts,
                self._objects[:n].tolist(),
                self._occurrences[:n].tolist(),
                self._in_context[:n].tolist(),
                offsets,
                examples,
                self._slab_square[:n].tolist(),
                self._slab_cross[:n].tolist(),
            )
            self._built = dict(zip(self._texts, fragments, strict=True))
        return self._built

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
        if counts.slab_sizes is not None:
            sizes = counts.slab_sizes
            self.slabs_seen += len(sizes)
            self.slab_objects += int(sizes.sum())
            self.slab_objects_square += int((sizes * sizes).sum())
        if not counts.texts:
            return
        ids = self._ids(counts.texts)
        if counts.slab_sizes is not None and len(counts.slab_text):
            self._add_spread(ids, counts)
        if counts.context:
            self._in_context[ids] += counts.occurrences
        else:
            self._objects[ids] += counts.objects
            self._occurrences[ids] += counts.occurrences
            self._add_offsets(ids[counts.offset_text], counts.offset_at, counts.offset_runs)
            self._add_examples(ids, counts.examples)
        self._bound()

    def merge(self, other: FragmentTally) -> None:
        """Add every count of *other* into this tally."""
        n = len(other)
        if n:
            ids = self._ids(other._texts)
            self._objects[ids] += other._objects[:n]
            self._occurrences[ids] += other._occurrences[:n]
            self._in_context[ids] += other._in_context[:n]
            their_ids, at, runs = other._reduced_offsets()
            self._add_offsets(ids[their_ids], at, runs)
            self._add_examples(ids, other._examples[:n])
            self._slab_square[ids] += other._slab_square[:n]
            self._slab_cross[ids] += other._slab_cross[:n]
        # A slab is in one share only, so per-slab sums add.
        for key, (square, cross) in other.group_spread.items():
            sums = self.group_spread.setdefault(key, [0.0, 0.0])
            sums[0] += square
            sums[1] += cross
        self.slabs_seen += other.slabs_seen
        self.slab_objects += other.slab_objects
        self.slab_objects_square += other.slab_objects_square
        self.error_bound += other.error_bound
        self.dropped_fragments += other.dropped_fragments
        self._bound()

    def _add_spread(self, ids: npt.NDArray[np.int64], counts: BatchCounts) -> None:
        """Add one batch's per-slab sums, per fragment and per group."""
        assert counts.slab_sizes is not None
        n = len(self._texts)
        text = ids[counts.slab_text]
        objects = counts.slab_objects.astype(np.float64)
        size = counts.slab_sizes[counts.slab_index].astype(np.float64)
        self._slab_square[:n] += np.bincount(text, weights=objects * objects, minlength=n)
        self._slab_cross[:n] += np.bincount(text, weights=objects * size, minlength=n)
        if self.group_of is None:
            return
        slabs = len(counts.slab_sizes)
        keys, where = np.unique(
            self._group_of_text[text] * slabs + counts.slab_index, return_inverse=True
        )
        per_group = np.bincount(where.ravel(), weights=objects)
        group_size = counts.slab_sizes[keys % slabs].astype(np.float64)
        groups = keys // slabs
        square = np.bincount(groups, weights=per_group * per_group)
        cross = np.bincount(groups, weights=per_group * group_size)
        for g in np.flatnonzero(square).tolist():
            sums = self.group_spread.setdefault(self._group_keys[g], [0.0, 0.0])
            sums[0] += float(square[g])
            sums[1] += float(cross[g])

    def _ids(self, texts: list[bytes]) -> npt.NDArray[np.int64]:
        """The ids of *texts* (distinct), giving new ones to new texts."""
        self._built = None
        index, known = self._index, self._texts
        # Known texts are looked up in one pass in C; only new ones need Python.
        found: list[int | None] = list(map(index.get, texts))
        new: list[int] = []
        for k in [k for k, i in enumerate(found) if i is None]:
            i = found[k] = index[texts[k]] = len(known)
            known.append(texts[k])
            new.append(i)
        self._reserve(len(known))
        if self.group_of is not None:
            for i in new:
                key = self.group_of(known[i])
                group = self._group_ids.get(key)
                if group is None:
                    group = self._group_ids[key] = len(self._group_keys)
                    self._group_keys.append(key)
                self._group_of_text[i] = group
        return np.array(found, dtype=np.int64)

    def _reserve(self, n: int) -> None:
        """Make the arrays hold at least *n* fragments."""
        have = len(self._objects)
        if n <= have:
            return
        grow = max(n, 2 * have, 1024) - have
        zeros = np.zeros(grow, np.int64)
        self._objects = np.concatenate([self._objects, zeros])
        self._occurrences = np.concatenate([self._occurrences, zeros])
        self._in_context = np.concatenate([self._in_context, zeros])
        empty = np.full((grow, EXAMPLES), _NO_ADDRESS, np.uint64)
        self._examples = np.concatenate([self._examples, empty])
        self._group_of_text = np.concatenate([self._group_of_text, zeros])
        floats = np.zeros(grow, np.float64)
        self._slab_square = np.concatenate([self._slab_square, floats])
        self._slab_cross = np.concatenate([self._slab_cross, floats])

    def _add_offsets(
        self,
        ids: npt.NDArray[np.int64],
        at: npt.NDArray[np.int64],
        runs: npt.NDArray[np.int64],
    ) -> None:
        self._offsets.append((ids, at, runs))
        self._offset_entries += len(ids)
        if self._offset_entries > 4 * len(self._texts) + 100_000:
            self._reduced_offsets()

    def _reduced_offsets(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Sum the offset pieces into one (id, offset, runs) triple of arrays."""
        if not self._offsets:
            return _EMPTY_I64, _EMPTY_I64, _EMPTY_I64
        ids = np.concatenate([piece[0] for piece in self._offsets])
        at = np.concatenate([piece[1] for piece in self._offsets])
        runs = np.concatenate([piece[2] for piece in self._offsets])
        keys, where = np.unique((ids << 32) | at, return_inverse=True)
        total = np.zeros(len(keys), np.int64)
        np.add.at(total, where.ravel(), runs)
        reduced = (keys >> 32, keys & 0xFFFFFFFF, total)
        self._offsets = [reduced]
        self._offset_entries = len(keys)
        return reduced

    def _add_examples(self, ids: npt.NDArray[np.int64], lowest: npt.NDArray[np.uint64]) -> None:
        """
        Merge the lowest addresses *lowest* (one padded row per id in *ids*,
        ids distinct) into the examples table. Only ids whose examples can
        change are touched: after the first batches of a walk that goes up in
        address, the handful of texts that are new or still short of examples.
        """
        table = self._examples[ids]
        needy = np.flatnonzero(lowest[:, 0] < table[:, EXAMPLES - 1])
        if len(needy) == 0:
            return
        both = np.sort(np.concatenate([table[needy], lowest[needy]], axis=1), axis=1)
        # An address seen twice (the same object merged twice) counts once.
        repeated = both[:, 1:] == both[:, :-1]
        if repeated.any():
            both[:, 1:][repeated] = _NO_ADDRESS
            both.sort(axis=1)
        self._examples[ids[needy]] = both[:, :EXAMPLES]

    def _bound(self) -> None:
        """Drop the rarest fragments if the tally has grown past its bound."""
        n = len(self._texts)
        if self.max_fragments is None or n <= self.max_fragments:
            return
        weight = self._occurrences[:n] + self._in_context[:n]
        keep_n = max(1, self.max_fragments // 2)
        # Drop every fragment at or below the weight of the keep_n-th heaviest.
        threshold = max(1, int(np.partition(weight, n - keep_n)[n - keep_n]))
        keep = weight > threshold
        ids, at, runs = self._reduced_offsets()
        new_id = np.cumsum(keep) - 1
        kept_offsets = keep[ids]
        self._offsets = [(new_id[ids[kept_offsets]], at[kept_offsets], runs[kept_offsets])]
        self._offset_entries = int(kept_offsets.sum())
        self._texts = [t for t, k in zip(self._texts, keep.tolist(), strict=True) if k]
        self._index = {text: i for i, text in enumerate(self._texts)}
        self._objects = self._objects[:n][keep]
        self._occurrences = self._occurrences[:n][keep]
        self._in_context = self._in_context[:n][keep]
        self._examples = self._examples[:n][keep]
        self._group_of_text = self._group_of_text[:n][keep]
        self._slab_square = self._slab_square[:n][keep]
        self._slab_cross = self._slab_cross[:n][keep]
        self.dropped_fragments += n - len(self._texts)
        self.error_bound += threshold
        self._built = None
