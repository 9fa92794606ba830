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
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

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


def find_runs(
    rows: npt.NDArray[np.uint8], min_length: int = DEFAULT_MIN_LENGTH, texts: bool = True
) -> Runs:
    """
    Find every printable run of at least *min_length* bytes in each row of
    *rows* (shape ``(objects, bytes_per_object)``). Runs stop at row ends.
    With *texts* false, ``Runs.text`` is left empty (see :func:`group_runs`).
    """
    if min_length < 1:
        raise ValueError("min_length must be at least 1")
    n, width = rows.shape
    if n == 0 or width == 0:
        empty = np.zeros(0, dtype=np.intp)
        return Runs(empty, empty, empty, np.zeros(0, dtype="S1"))
    # Printable bytes, each row followed by one non-printable pad byte, so
    # that in the flattened array a run can never cross a row end.
    printable = np.zeros((n, width + 1), dtype=bool)
    np.less(rows - np.uint8(0x20), np.uint8(0x7F - 0x20), out=printable[:, :width])
    flat = printable.ravel()
    # Edges: where printable differs from the byte before. They alternate,
    # run start then run end (exclusive), and every run ends by its pad byte.
    edge = np.empty_like(flat)
    edge[0] = flat[0]
    np.not_equal(flat[1:], flat[:-1], out=edge[1:])
    bounds = np.flatnonzero(edge)
    starts, lengths = bounds[0::2], bounds[1::2] - bounds[0::2]
    keep = lengths >= min_length
    starts, lengths = starts[keep], lengths[keep]
    row = starts // (width + 1)
    offset = starts - row * (width + 1)
    text = _gather_texts(rows, row, offset, lengths) if texts else np.zeros(0, dtype="S8")
    return Runs(row, offset, lengths, text)


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

#: Runs of at most this many bytes are copied out word by word, straight
#: from the rows; longer ones as whole windows (:func:`_gather_texts`).
_WORD_GATHER_BYTES = 64

#: _WORD_MASKS[k] keeps the low k bytes of a little-endian word.
_WORD_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)


def _run_words(
    flat: npt.NDArray[np.uint8],
    start: npt.NDArray[np.intp],
    length: npt.NDArray[np.intp],
    words: int,
) -> npt.NDArray[np.uint64]:
    """
    The bytes of each run (at ``flat[start:start + length]``) as *words*
    little-endian 64-bit words, zero past the run's end: shape
    ``(words, runs)``. Each word is one gather from an unaligned view of the
    bytes; the few words that would read past the end are read one by one.
    """
    out = np.empty((words, len(start)), dtype=np.uint64)
    last = flat.size - 8
    view = (
        np.ndarray((last + 1,), dtype="<u8", buffer=flat, strides=(1,))
        if last >= 0
        else np.zeros(1, dtype="<u8")
    )
    for j in range(words):
        pos = start + 8 * j
        word = view[np.clip(pos, 0, max(last, 0))]
        for i in np.flatnonzero(pos > last).tolist():
            chunk = flat[int(pos[i]) : int(pos[i]) + 8].tobytes()
            word[i] = int.from_bytes(chunk.ljust(8, b"\0"), "little")
        word &= _WORD_MASKS[np.clip(length - 8 * j, 0, 8)]
        out[j] = word
    return out


def _group_keys(
    keys: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """
    Group equal 64-bit *keys* (already well mixed): for each distinct key the
    index of one occurrence, for each key which distinct key it is, and how
    often each occurs; like ``np.unique`` with every ``return_*``. It inserts
    all keys at once into an open-addressing table at most half full, in
    whole-array passes: numpy's own unique sorts, or hashes holding the GIL,
    which stalls the walk that reads the next slabs on another thread.
    """
    size = 1 << max(4, (2 * len(keys)).bit_length())
    mask = size - 1
    #: Slot -> index of the first key to claim it, or -1 while empty.
    owner = np.full(size, -1, dtype=np.intp)
    slot_of = np.empty(len(keys), dtype=np.intp)
    pending = np.arange(len(keys), dtype=np.intp)
    slots = (keys & np.uint64(mask)).astype(np.intp)
    while len(pending):
        # Claim the empty slots (of several claims on one slot, one wins),
        # then settle every key whose slot holds an equal key; the rest
        # probe the next slot.
        empty = owner[slots] < 0
        owner[slots[empty]] = pending[empty]
        settled = keys[owner[slots]] == keys[pending]
        slot_of[pending[settled]] = slots[settled]
        pending, slots = pending[~settled], (slots[~settled] + 1) & mask
    used = np.flatnonzero(owner >= 0)
    id_of_slot = np.empty(size, dtype=np.intp)
    id_of_slot[used] = np.arange(len(used), dtype=np.intp)
    which = id_of_slot[slot_of]
    return owner[used], which, np.bincount(which, minlength=len(used)).astype(np.int64)


def _group_words(
    words: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """
    Group equal texts given as words (shape ``(words, texts)``, zero padded):
    the distinct texts (one row of words each), which of them each text is,
    and how often each occurs. Texts are grouped by a 64-bit hash of their
    words, which is much faster than sorting them; the grouping is then
    checked against the words themselves, and redone by sorting in the
    unlikely case of a collision, so it is always exact.
    """
    with np.errstate(over="ignore"):
        digest = words[0] * _HASH_MULTIPLIER
        for column in words[1:]:
            digest ^= digest >> np.uint64(29)
            digest = (digest ^ column) * _HASH_MULTIPLIER
        digest ^= digest >> np.uint64(32)
    first, which, counts = _group_keys(digest)
    if all(np.array_equal(column[first][which], column) for column in words):
        return np.ascontiguousarray(words[:, first].T), which, counts
    distinct, where, occurrences = np.unique(
        words.T, axis=0, return_inverse=True, return_counts=True
    )
    return distinct, where.ravel(), occurrences.astype(np.int64)


def group_runs(
    rows: npt.NDArray[np.uint8], runs: Runs
) -> tuple[list[bytes], npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """
    Group the texts of *runs* found in *rows*: the distinct texts, which of
    them each run is, and how many runs each is. Runs are copied out in
    classes of width (8, 16, 32, ... bytes), so that one long run does not
    make every short run as wide as itself: memory stays within twice the
    bytes of the runs, whatever a hostile object holds. Texts of different
    classes differ in length, so they never group.
    """
    flat = np.ascontiguousarray(rows).ravel()
    start = runs.row * rows.shape[1] + runs.offset
    # Words a run needs, rounded up to a power of two: 2**width_class.
    width_class = np.frexp(((runs.length + 7) // 8 - 1).astype(np.float64))[1]
    present = np.flatnonzero(np.bincount(width_class)).tolist()
    which = np.empty(len(runs.row), dtype=np.intp)
    texts: list[bytes] = []
    counts: list[npt.NDArray[np.int64]] = []
    for bits in present:
        members = np.flatnonzero(width_class == bits) if len(present) > 1 else None
        at = start if members is None else start[members]
        length = runs.length if members is None else runs.length[members]
        if 8 << bits <= _WORD_GATHER_BYTES:
            words = _run_words(flat, at, length, 1 << bits)
        else:
            row = runs.row if members is None else runs.row[members]
            copied = _gather_texts(rows, row, at - row * rows.shape[1], length)
            words = copied.view(np.uint64).reshape(len(copied), -1).T
        distinct, where, occurrences = _group_words(words)
        if members is None:
            which[:] = where
        else:
            which[members] = where + len(texts)
        texts.extend(distinct.view(f"S{distinct.shape[1] * 8}").ravel().tolist())
        counts.append(occurrences)
    return texts, which, np.concatenate(counts) if counts else np.zeros(0, np.int64)


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
    intervals (:mod:`dumpminer.sample`).
    """
    sizes = None
    if slab_of_row is not None:
        sizes = np.bincount(slab_of_row, minlength=slabs).astype(np.int64)
    runs = find_runs(rows, min_length, texts=False)
    if len(runs.row) == 0:
        return BatchCounts([], _EMPTY_I64, slab_sizes=sizes)
    texts, which, occurrences = group_runs(rows, runs)
    repeats = _repeats_in_objects(runs.row, which, rows.shape[0], len(texts))
    offset_text, offset_at, offset_runs = _offset_counts(
        which, runs.offset, rows.shape[1], len(texts)
    )
    counts = BatchCounts(
        texts=texts,
        occurrences=occurrences,
        objects=(occurrences - repeats).astype(np.int64),
        offset_text=offset_text,
        offset_at=offset_at,
        offset_runs=offset_runs,
        examples=_lowest_addresses(which, addresses[runs.row], len(texts)),
        slab_sizes=sizes,
    )
    if slab_of_row is not None:
        n = rows.shape[0]
        pairs = np.unique(which.astype(np.int64) * n + runs.row)
        text_slab = (pairs // n) * slabs + slab_of_row[pairs % n]
        keys, objects = np.unique(text_slab, return_counts=True)
        counts.slab_text, counts.slab_index = keys // slabs, keys % slabs
        counts.slab_objects = objects.astype(np.int64)
    return counts


def count_context(rows: npt.NDArray[np.uint8], min_length: int = DEFAULT_MIN_LENGTH) -> BatchCounts:
    """Count the fragments of a batch of context windows (one per row)."""
    runs = find_runs(rows, min_length, texts=False)
    if len(runs.row) == 0:
        return BatchCounts([], _EMPTY_I64, context=True)
    texts, _, hits = group_runs(rows, runs)
    return BatchCounts(texts, hits, context=True)


#: Distinct fragments a tally keeps before it drops the rarest (about
#: 0.5 KiB of memory each once reported).
DEFAULT_MAX_FRAGMENTS = 1_000_000

#: "No example here" in the examples table (no object lives at this address).
_NO_ADDRESS = np.uint64(2**64 - 1)


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
            # are one slice of them.
            bounds = np.searchsorted(ids, np.arange(n + 1)).tolist()
            at_list, runs_list = at.tolist(), runs.tolist()
            examples = self._examples[:n].tolist()
            # Rows are ascending with the padding last: keep each row's head.
            kept = np.count_nonzero(self._examples[:n] != _NO_ADDRESS, axis=1).tolist()
            square, cross = self._slab_square[:n].tolist(), self._slab_cross[:n].tolist()
            self._built = {
                text: Fragment(
                    text,
                    objects,
                    occurrences,
                    in_context,
                    dict(
                        zip(
                            at_list[bounds[i] : bounds[i + 1]],
                            runs_list[bounds[i] : bounds[i + 1]],
                            strict=True,
                        )
                    ),
                    examples[i][: kept[i]],
                    square[i],
                    cross[i],
                )
                for i, (text, objects, occurrences, in_context) in enumerate(
                    zip(
                        self._texts,
                        self._objects[:n].tolist(),
                        self._occurrences[:n].tolist(),
                        self._in_context[:n].tolist(),
                        strict=True,
                    )
                )
            }
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


def _lowest_addresses(
    which: npt.NDArray[np.intp], address: npt.NDArray[np.uint64], n_texts: int
) -> npt.NDArray[np.uint64]:
    """
    Per text, the lowest distinct addresses among its runs (run ``i`` is text
    ``which[i]`` in the object at ``address[i]``), ascending, padded with
    _NO_ADDRESS: shape ``(n_texts, EXAMPLES)``. Each round takes every
    text's lowest address and drops the runs at it, so objects holding a
    text twice count once.
    """
    lowest = np.full((n_texts, EXAMPLES), _NO_ADDRESS, dtype=np.uint64)
    for k in range(EXAMPLES):
        best = np.full(n_texts, _NO_ADDRESS, dtype=np.uint64)
        np.minimum.at(best, which, address)
        lowest[:, k] = best
        later = address != best[which]
        which, address = which[later], address[later]
        if len(which) == 0:
            break
    return lowest


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
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(text index, offset, runs there) for every offset a text was found at."""
    keys = which.astype(np.int64) * width + offset
    if n_texts * width <= 1 << 24:
        counts = np.bincount(keys, minlength=n_texts * width)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, counts = np.unique(keys, return_counts=True)
    return keys // width, keys % width, counts.astype(np.int64)
