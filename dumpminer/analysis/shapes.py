"""
String-less leaks: objects that hold no text, grouped by their shape.

A leak of ``struct link_rec { struct list_head node; struct agent_table
*table; ... }`` leaves no printable fragment to cluster, yet its million
objects look alike: pointers at the same offsets, and at offset 16 the same
constant pointer to the module's static table. This module finds such
objects during the one walk of a mining run (an
:class:`~dumpminer.extract.observers.ObjectObserver`), groups them by *shape* and
reports the largest groups, with exact counts, example addresses and, after
the walk, pointer attribution (:mod:`dumpminer.analysis.attribution`).

**String-less.** An object is string-less when it holds no printable run of
the run's ``min_length`` once every aligned word holding a kernel address is
blanked (the rule :mod:`dumpminer.extract.pointers` applies for ``diff``). A
pointer's low bytes are often printable (``0xffff8bf102b01e40`` holds ``@\\x1e``;
others hold three printable bytes), and those runs are KASLR noise, not
text: they do not count. A run that reaches into a pointer word is cut where
the word starts, as ``diff`` cuts it. So such an object may still count
fragments in the string tally (the tally sees raw bytes) and be string-less
here.

**Shape.** The key of an object is, for each of its first
:data:`~dumpminer.analysis.attribution.MAX_WORDS` words, one of three things
(:func:`dumpminer.analysis.words.shape_key_words`): *data* (no kernel pointer: NULL,
an integer, anything else), *pointer* (to a slab object, the object itself,
a page, vmalloc) or, for a pointer into the kernel image or a module, the
static's address itself. NULL and integers are one class because a counter
that is 0 in one object and 5 in the next is the same field; pointers to
memory that comes and goes are one class because a list node points at other
nodes, and at the list's head (a static) when first or last.

That last case is why a static's address stays in the key only where it is
common: after the walk, a (offset, static) pair held by fewer than
:data:`STATIC_KEY_MIN` objects is read as a plain pointer and the groups
merge. The first and last node of a list (``prev``/``next`` at the static
head) join the other nodes, while a million nodes pointing at one module
table stay one group that names the table, apart from every other object of
the cache.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from drgn import Object, Program

from dumpminer.analysis import _words
from dumpminer.analysis.attribution import MAX_WORDS, SAMPLE_OBJECTS, Attribution, attribute_rows
from dumpminer.analysis.words import (
    KEY_DATA,
    KEY_POINTER,
    KernelRanges,
    WordNamer,
    classify_words,
    object_words,
    shape_key_words,
)
from dumpminer.extract.fragments import DEFAULT_MIN_LENGTH
from dumpminer.extract.observers import ObjectBatch
from dumpminer.extract.pointers import kernel_address_words

__all__ = [
    "EXAMPLES",
    "MAX_SHAPES",
    "STATIC_KEY_MIN",
    "ShapeGroup",
    "ShapeObserver",
    "ShapeSummary",
    "group_shapes",
    "shape_groups",
    "stringless_rows",
    "summarise_shapes",
]

#: An (offset, static address) pair held by fewer objects is a plain pointer in the key.
STATIC_KEY_MIN = 8
#: Distinct keys kept before the rarest are dropped (then counts are no longer exact).
MAX_SHAPES = 20_000
#: Example addresses per group in the report (the lowest).
EXAMPLES = 5
#: Shape groups reported.
TOP_SHAPES = 10

_PRINT_LOW, _PRINT_HIGH = 0x20, 0x7E


def stringless_rows(
    rows: npt.NDArray[np.uint8], min_length: int = DEFAULT_MIN_LENGTH
) -> npt.NDArray[np.bool_]:
    """
    Which rows (one object's bytes each, 8-byte aligned) hold no printable
    run of *min_length* bytes once their kernel-address words are blanked:
    the string-less objects (see the module docstring for the rule).
    """
    return stringless_words(padded_words(rows), min_length)


def padded_words(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """Every row's 8-byte words, the last one padded with zero bytes."""
    n, size = rows.shape
    width = -(-size // 8) * 8
    if width != size:
        padded = np.zeros((n, width), dtype=np.uint8)
        padded[:, :size] = rows
        rows = padded
    return object_words(rows)


def stringless_words(
    words: npt.NDArray[np.uint64], min_length: int = DEFAULT_MIN_LENGTH
) -> npt.NDArray[np.bool_]:
    """
    :func:`stringless_rows` on rows given as their words (:func:`padded_words`),
    in one compiled pass (dumpminer/analysis/_words.c) with the GIL released.
    """
    n, width = words.shape
    if n == 0 or width == 0:
        return np.ones(n, dtype=np.bool_)
    flags = _words.stringless(np.ascontiguousarray(words), width * 8, min_length)
    return np.frombuffer(flags, dtype=np.bool_)


def _stringless_bytes(rows: npt.NDArray[np.uint8], min_length: int) -> npt.NDArray[np.bool_]:
    """:func:`stringless_rows` in numpy, byte by byte: the tests' reference."""
    n, size = rows.shape
    if size < min_length or n == 0:
        return np.ones(n, dtype=np.bool_)
    printable = (rows >= _PRINT_LOW) & (rows <= _PRINT_HIGH)
    width = size // 8 * 8
    if width:
        pointer = kernel_address_words(object_words(rows))
        printable[:, :width] &= ~np.repeat(pointer, 8, axis=1)
    span = size - min_length + 1
    runs = printable[:, :span].copy()
    for shift in range(1, min_length):
        runs &= printable[:, shift : shift + span]
    stringless: npt.NDArray[np.bool_] = np.logical_not(runs.any(axis=1))
    return stringless


@dataclass
class _Group:
    """One shape key's objects so far: the count and the lowest rows."""

    objects: int
    #: The lowest addresses seen, ascending, at most SAMPLE_OBJECTS.
    addresses: npt.NDArray[np.uint64]
    #: Their first MAX_WORDS words' bytes, one row each.
    rows: npt.NDArray[np.uint8]

    def add(self, other: _Group) -> None:
        """Fold in another group of the same key."""
        self.objects += other.objects
        addresses = np.concatenate([self.addresses, other.addresses])
        rows = np.concatenate([self.rows, other.rows])
        keep = np.argsort(addresses, kind="stable")[:SAMPLE_OBJECTS]
        self.addresses, self.rows = addresses[keep], rows[keep]


#: One batch's groups: key bytes -> group.
_Partial = dict[bytes, _Group]


@dataclass
class ShapeObserver:
    """
    Groups the string-less objects of a walk by shape key (an
    :class:`~dumpminer.extract.observers.ObjectObserver`). Make it with
    ``functools.partial(ShapeObserver, min_length)`` as the engine's factory.
    """

    min_length: int = DEFAULT_MIN_LENGTH
    ranges: KernelRanges | None = None
    object_size: int = 0
    #: Objects seen, and string-less ones among them.
    objects: int = 0
    stringless: int = 0
    groups: dict[bytes, _Group] = field(default_factory=dict)
    #: Objects in groups dropped for MAX_SHAPES, and the largest such group.
    dropped_objects: int = 0
    dropped_largest: int = 0

    def begin(self, prog: Program, caches: list[Object]) -> None:
        """Read the kernel's address ranges, once per process."""
        self.ranges = KernelRanges.read(prog)

    def observe(self, batch: ObjectBatch) -> tuple[int, int, _Partial]:
        """The shape groups of one batch's string-less objects."""
        assert self.ranges is not None, "begin() first"
        objects = batch.objects
        words = padded_words(objects)
        groups = {}
        for key, count, kept in group_shapes(words, batch.addresses, self.ranges, self.min_length):
            rows = objects[kept, : MAX_WORDS * 8]
            groups[key] = _Group(count, batch.addresses[kept], rows)
        return len(objects), batch.layout.object_size, groups

    def absorb(self, partial: tuple[int, int, _Partial]) -> None:
        """Fold one batch's groups in."""
        objects, size, groups = partial
        self.objects += objects
        self.object_size = max(self.object_size, size)
        for key, group in groups.items():
            self.stringless += group.objects
            self._add(key, group)
        self._bound()

    def merge(self, other: Self) -> None:
        """Fold in another process's observer."""
        self.objects += other.objects
        self.stringless += other.stringless
        self.object_size = max(self.object_size, other.object_size)
        self.dropped_objects += other.dropped_objects
        self.dropped_largest = max(self.dropped_largest, other.dropped_largest)
        for key, group in other.groups.items():
            self._add(key, group)
        self._bound()

    def _add(self, key: bytes, group: _Group) -> None:
        mine = self.groups.get(key)
        if mine is None:
            self.groups[key] = _Group(group.objects, group.addresses, group.rows)
        else:
            mine.add(group)

    def _bound(self) -> None:
        """Drop the rarest half of the keys when there are more than MAX_SHAPES."""
        if len(self.groups) <= MAX_SHAPES:
            return
        ranked = sorted(self.groups.items(), key=lambda item: -item[1].objects)
        for key, group in ranked[MAX_SHAPES // 2 :]:
            self.dropped_objects += group.objects
            self.dropped_largest = max(self.dropped_largest, group.objects)
            del self.groups[key]

    @property
    def exact(self) -> bool:
        """Whether every string-less object is counted in a group."""
        return self.dropped_objects == 0


def group_shapes(
    words: npt.NDArray[np.uint64],
    addresses: npt.NDArray[np.uint64],
    ranges: KernelRanges,
    min_length: int = 0,
) -> list[tuple[bytes, int, npt.NDArray[np.int64]]]:
    """
    Group rows (given as their words) by shape key (the key of their first
    :data:`MAX_WORDS` words, :func:`dumpminer.analysis.words.shape_key_words`): per
    group, in order of first appearance, the key's bytes, its number of rows
    and the indexes of its (at most SAMPLE_OBJECTS) lowest addresses,
    ascending. With *min_length*, only the string-less rows
    (:func:`stringless_words`) are grouped. One compiled pass
    (dumpminer/analysis/_words.c); :func:`_group_keys` is the numpy reference.
    """
    n, width = words.shape
    key_width = min(width, MAX_WORDS)
    if n == 0:
        return []
    if key_width == 0:
        which = np.flatnonzero(stringless_words(words, min_length)) if min_length else None
        if which is not None:
            words, addresses = words[which], addresses[which]
        groups = _group_keys(shape_key_words(words[:, :key_width], ranges), addresses)
        return groups if which is None else [(k, c, which[i]) for k, c, i in groups]
    modules = ranges.modules
    raw_keys, raw_counts, raw_samples = _words.group_shapes(
        np.ascontiguousarray(words, dtype=np.uint64),
        n,
        width,
        key_width,
        np.ascontiguousarray(addresses, dtype=np.uint64),
        ranges.kernel_image[0],
        ranges.kernel_image[1],
        np.array([m[0] for m in modules], dtype=np.uint64),
        np.array([m[1] for m in modules], dtype=np.uint64),
        SAMPLE_OBJECTS,
        min_length,
    )
    keys = np.frombuffer(raw_keys, dtype=np.uint64).reshape(-1, key_width)
    counts = np.frombuffer(raw_counts, dtype=np.int64)
    samples = np.frombuffer(raw_samples, dtype=np.int64).reshape(-1, SAMPLE_OBJECTS)
    return [
        (keys[g].tobytes(), int(counts[g]), samples[g][samples[g] >= 0]) for g in range(len(counts))
    ]


def _group_keys(
    keys: npt.NDArray[np.uint64], addresses: npt.NDArray[np.uint64]
) -> list[tuple[bytes, int, npt.NDArray[np.int64]]]:
    """
    :func:`group_shapes` in numpy, given the rows' keys: the tests' reference
    (groups in the order of their keys' hashes, not of first appearance).
    """
    if keys.shape[0] == 0:
        return []
    inverse, first = _key_classes(keys)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(first))
    out = []
    for group, members in enumerate(np.split(order, np.cumsum(counts)[:-1])):
        if members.size > SAMPLE_OBJECTS:
            lowest = np.argpartition(addresses[members], SAMPLE_OBJECTS - 1)[:SAMPLE_OBJECTS]
            members = members[lowest]
        members = members[np.argsort(addresses[members], kind="stable")]
        out.append((keys[first[group]].tobytes(), int(counts[group]), members))
    return out


def _key_classes(
    keys: npt.NDArray[np.uint64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """
    A class number per row, equal for equal rows, and each class's first
    row. Rows are hashed to one word first (sorting whole rows is slower),
    and the grouping is checked against the rows themselves, falling back
    to sorting whole rows on a hash collision: the groups are exact.
    """
    if keys.shape[1] == 0:
        return np.zeros(keys.shape[0], dtype=np.int64), np.zeros(1, dtype=np.int64)
    multipliers = _multipliers()[: keys.shape[1]]
    hashed = keys[:, 0] * multipliers[0]
    for column in range(1, keys.shape[1]):
        hashed += keys[:, column] * multipliers[column]
    _, first, inverse = np.unique(hashed, return_index=True, return_inverse=True)
    if np.array_equal(keys, keys[first[inverse]]):
        return inverse.reshape(-1).astype(np.int64), first.astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), first.astype(np.int64)


@functools.cache
def _multipliers() -> npt.NDArray[np.uint64]:
    """
    Odd random multipliers of the key hash, one per word. Drawn on first
    use: importing numpy.random takes about 0.01 s, and only the numpy
    reference (the tests) and rows without words hash keys here.
    """
    draw = np.random.default_rng(0x5EED).integers(1, 2**63, size=MAX_WORDS, dtype=np.uint64)
    return draw | np.uint64(1)


@dataclass(frozen=True)
class ShapeGroup:
    """String-less objects of one shape: what the report shows next to clusters."""

    #: Objects of this shape (exact unless the observer dropped keys).
    objects: int
    #: Per word: ``data``, ``pointer`` or ``&static`` (its symbol, or ``module:symbol``).
    shape: tuple[str, ...]
    #: The lowest addresses of the group.
    examples: tuple[int, ...]
    attribution: Attribution
    #: The objects attribution read (the group's lowest, at most SAMPLE_OBJECTS).
    sampled: tuple[int, ...] = ()
    #: Call sites of the sampled objects, most first, when their cache keeps
    #: alloc tracks (:func:`dumpminer.analysis.callsites.shape_call_sites`); else None.
    allocated_by: tuple[tuple[str, int], ...] | None = None

    def shape_text(self) -> str:
        """The shape, repeats folded: ``pointer*2 &leaky_agent:agent_table pointer*2 data*7``."""
        out: list[str] = []
        counts: list[int] = []
        for word in self.shape:
            if out and out[-1] == word:
                counts[-1] += 1
            else:
                out.append(word)
                counts.append(1)
        return " ".join(w if c == 1 else f"{w}*{c}" for w, c in zip(out, counts, strict=True))


def shape_groups(
    observer: ShapeObserver, namer: WordNamer, top: int = TOP_SHAPES
) -> list[ShapeGroup]:
    """
    The *top* largest shape groups of *observer*'s walk, with statics held
    by fewer than :data:`STATIC_KEY_MIN` objects at an offset read as plain
    pointers (see the module docstring), each attributed on its kept rows.
    """
    fine = [(np.frombuffer(key, dtype=np.uint64), group) for key, group in observer.groups.items()]
    common: Counter[tuple[int, int]] = Counter()
    for key, group in fine:
        for offset in np.flatnonzero(key > KEY_POINTER):
            common[int(offset), int(key[offset])] += group.objects
    merged: dict[bytes, _Group] = {}
    for key, group in fine:
        general = key.copy()
        for offset in np.flatnonzero(key > KEY_POINTER):
            if common[int(offset), int(key[offset])] < STATIC_KEY_MIN:
                general[offset] = KEY_POINTER
        name = general.tobytes()
        if name in merged:
            merged[name].add(group)
        else:
            merged[name] = _Group(group.objects, group.addresses, group.rows)
    ranked = sorted(merged.items(), key=lambda item: (-item[1].objects, item[0]))[:top]
    return [
        ShapeGroup(
            objects=group.objects,
            shape=_shape_words(np.frombuffer(key, dtype=np.uint64), namer),
            examples=tuple(int(a) for a in group.addresses[:EXAMPLES]),
            attribution=attribute_rows(namer, group.rows, group.addresses, observer.object_size),
            sampled=tuple(int(a) for a in group.addresses),
        )
        for key, group in ranked
    ]


def _shape_words(key: npt.NDArray[np.uint64], namer: WordNamer) -> tuple[str, ...]:
    """A key's words as ``data``, ``pointer`` and ``&static`` names."""
    out = []
    regions = classify_words(key.reshape(1, -1), np.zeros(1, np.uint64), 0, namer.ranges)[0]
    for value, region in zip(key, regions, strict=True):
        if value == KEY_DATA:
            out.append("data")
        elif value == KEY_POINTER:
            out.append("pointer")
        else:
            target = namer.name(int(value), int(region))
            out.append(f"&{target.target or f'{int(value):#x}'}")
    return tuple(out)


@dataclass(frozen=True)
class ShapeSummary:
    """The string-less objects of a walk: how many, and their largest shape groups."""

    #: Objects the walk saw, and the string-less ones among them.
    objects: int
    stringless: int
    #: Every string-less object is counted in its group (no key was dropped).
    exact: bool
    #: String-less objects left out when keys were dropped (MAX_SHAPES).
    dropped_objects: int
    #: The largest groups, most objects first.
    groups: tuple[ShapeGroup, ...]

    def to_json(self, share: Callable[[int], float]) -> dict[str, Any]:
        """The ``string_less`` object of docs/report-format.md (*share*: of the cache)."""
        return {
            "objects_seen": self.objects,
            "stringless": self.stringless,
            "exact": self.exact,
            "dropped_objects": self.dropped_objects,
            "groups": [
                {
                    "objects": g.objects,
                    "share": round(share(g.objects), 6),
                    "shape": list(g.shape),
                    "shape_text": g.shape_text(),
                    "examples": [f"{a:#x}" for a in g.examples],
                    "attribution": g.attribution.to_json(),
                    "allocated_by": None
                    if g.allocated_by is None
                    else {
                        "sampled": len(g.sampled),
                        "sites": [{"site": n, "objects": c} for n, c in g.allocated_by],
                    },
                }
                for g in self.groups
            ],
        }


def summarise_shapes(
    observer: ShapeObserver, namer: WordNamer, top: int = TOP_SHAPES
) -> ShapeSummary:
    """The :class:`ShapeSummary` of *observer*'s walk, its top *top* groups attributed."""
    return ShapeSummary(
        objects=observer.objects,
        stringless=observer.stringless,
        exact=observer.exact,
        dropped_objects=observer.dropped_objects,
        groups=tuple(shape_groups(observer, namer, top)),
    )
