"""
Pointer attribution: what the words of a cluster's objects point at.

Strings say *what* leaked; the pointers next to them say *whose* it is: a
word that holds the address of a module's static table, a kmalloc-128 object
or the object itself tells which struct this is. For each offset (each
aligned 8-byte word) of a group of objects, the words are classified
(:mod:`dumpminer.analysis.words`: NULL, small integer, self, a slab object of which
cache, kernel or module text or data with its symbol, vmalloc, ...) and the
dominant class is reported with its share.

Attribution runs after mining, on a bounded sample: for a string cluster the
lowest example addresses of the cluster and of its members (at most
:data:`SAMPLE_OBJECTS`, read once more from the dump), for a shape group of
string-less objects the rows the walk kept (:mod:`dumpminer.analysis.shapes`). Names
are resolved once per distinct value, so the cost is bounded by the sample,
not the cache. The report states how many objects each attribution looked at.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from drgn import FaultError

from dumpminer.analysis.words import (
    POINTER_CLASSES,
    WordNamer,
    classify_words,
    object_words,
)
from dumpminer.clustering.cluster import Cluster

__all__ = [
    "MAX_WORDS",
    "SAMPLE_OBJECTS",
    "SHOWN_OFFSETS",
    "TOP_CLUSTERS",
    "Attribution",
    "OffsetAttribution",
    "OffsetCensus",
    "attribute_clusters",
    "attribute_objects",
    "attribute_rows",
    "sample_addresses",
]

#: Most objects of one cluster or shape group that attribution looks at.
SAMPLE_OBJECTS = 64
#: Clusters attributed in a report (the table shows 25 by default).
TOP_CLUSTERS = 25
#: Most words per object attributed: the first 512 bytes (a kmalloc-4k
#: object's 512 offsets would be a page of report, not a clue).
MAX_WORDS = 64


@dataclass(frozen=True)
class OffsetAttribution:
    """The dominant class of the words at one offset of a group of objects."""

    offset: int
    #: The most frequent class name (:data:`dumpminer.analysis.words.CLASS_NAMES`).
    kind: str
    #: Sampled objects whose word here is of that class, over all sampled.
    share: float
    #: The class's most frequent slab cache, symbol or ``module:symbol``, if it names one.
    target: str | None = None
    #: Sampled objects whose word here is that target, over all sampled.
    target_share: float = 0.0

    @property
    def pointer(self) -> bool:
        """Whether the dominant class points at something."""
        return self.kind in POINTER_CLASSES

    def describe(self, sampled: int | None = None) -> str:
        """
        ``+0x10 module data leaky_agent:agent_table (100% of 64 sampled)``, or
        when the class's targets vary, ``+0x28 kernel data (100% of 64
        sampled; .LC0+0x6f 2%)``. Shares are of the *sampled* objects read,
        which the text says (without *sampled*, the bare percentage).
        """
        share = f"{100 * self.share:.0f}%" + ("" if sampled is None else f" of {sampled} sampled")
        if self.target is None:
            return f"+{self.offset:#x} {self.kind} ({share})"
        if self.target_share == self.share:
            return f"+{self.offset:#x} {self.kind} {self.target} ({share})"
        return (
            f"+{self.offset:#x} {self.kind} ({share}; {self.target} {100 * self.target_share:.0f}%)"
        )


@dataclass(frozen=True)
class Attribution:
    """Per offset, what the sampled objects of a cluster or shape group hold."""

    #: Objects looked at (the sample; see the module docstring).
    sampled: int
    offsets: tuple[OffsetAttribution, ...]
    #: Their addresses, ascending.
    addresses: tuple[int, ...] = ()

    def points_to(self) -> list[OffsetAttribution]:
        """The offsets whose dominant class is a pointer (the ``points to`` line)."""
        return [o for o in self.offsets if o.pointer]

    def to_json(self) -> dict[str, Any]:
        """The ``attribution`` object of docs/report-format.md."""
        return {
            "sampled": self.sampled,
            "offsets": [
                {
                    "offset": o.offset,
                    "class": o.kind,
                    "share": round(o.share, 4),
                    "target": o.target,
                    "target_share": round(o.target_share, 4),
                }
                for o in self.offsets
            ],
        }

    def points_to_text(self) -> str:
        """
        The ``points to`` line: its pointer offsets, described, each share
        saying how many objects it is of; empty if none.
        """
        return ", ".join(o.describe(self.sampled) for o in self.points_to())

    def points_to_line(self, census: OffsetCensus | None = None) -> str:
        """
        The ``points to`` line with only the offsets that tell this group's
        struct apart from the others of *census* (:meth:`OffsetCensus.telling`),
        and how many more there are; every pointer offset without a census.
        """
        if census is None:
            return self.points_to_text()
        shown, alike, more = census.telling(self)
        line = ", ".join(o.describe(self.sampled) for o in shown)
        rest = []
        if alike:
            rest.append(f"{alike} more the same in every group")
        if more:
            rest.append(f"{more} more")
        if rest and line:
            line += f" (+{'; '.join(rest)})"
        elif rest:
            line = f"{'; '.join(rest)} (pointer offsets)"
        return line

    def at(self, offset: int) -> OffsetAttribution | None:
        """The attribution of the word at *offset*, if attributed."""
        return next((o for o in self.offsets if o.offset == offset), None)


#: Most pointer offsets a ``points to`` line shows (the JSON keeps every word).
SHOWN_OFFSETS = 6


class OffsetCensus:
    """
    What the attributed groups of one report (clusters and shape groups)
    hold at each offset, to tell which offsets set a group's struct apart:
    in inode_cache every cluster is a struct inode with the same 21 pointer
    words, and only ``i_fop`` (``+0x168``) says which file system's inode it
    is. An offset whose class and target are the same in every group that
    has a word there tells nothing; the rarest descriptions tell most.
    """

    def __init__(self, attributions: Iterable[Attribution]) -> None:
        self.described: Counter[tuple[int, str, str | None]] = Counter()
        self.groups_at: Counter[int] = Counter()
        for attribution in attributions:
            for o in attribution.offsets:
                self.described[o.offset, o.kind, o.target] += 1
                self.groups_at[o.offset] += 1

    def alike(self, o: OffsetAttribution) -> bool:
        """Whether every other group with a word at this offset holds the same there."""
        present = self.groups_at[o.offset]
        return present > 1 and self.described[o.offset, o.kind, o.target] == present

    def telling(
        self, attribution: Attribution, limit: int = SHOWN_OFFSETS
    ) -> tuple[list[OffsetAttribution], int, int]:
        """
        The pointer offsets of *attribution* worth a line, at most *limit*, in
        offset order: those that differ from another group's first (the
        rarest description first), then named targets before unnamed ones;
        and how many were left out because they are the same in every group,
        and how many for want of room. With nothing telling (one group, or
        every offset alike), the first named ones are shown.
        """
        pointers = attribution.points_to()
        telling = [o for o in pointers if not self.alike(o)]
        alike = [o for o in pointers if self.alike(o)]
        if not telling:
            telling, alike = alike, []
        ranked = sorted(
            telling,
            key=lambda o: (
                self.described[o.offset, o.kind, o.target],
                o.target is None or o.kind == "self",
                o.offset,
            ),
        )
        shown = sorted(ranked[:limit], key=lambda o: o.offset)
        return shown, len(alike), len(ranked) - len(shown)


def attribute_rows(
    namer: WordNamer,
    rows: npt.NDArray[np.uint8],
    addresses: npt.NDArray[np.uint64],
    object_size: int,
) -> Attribution:
    """
    Attribute the objects whose bytes are *rows* (one object per row, at
    *addresses*, *object_size* bytes each): per word, the most frequent
    class among the rows, and that class's most frequent target (slab
    cache, symbol), each with its share. Ties go to the name first in
    order, so the result does not depend on the rows' order.
    """
    n = rows.shape[0]
    words = object_words(rows[:, :object_size], MAX_WORDS)
    sample = tuple(int(a) for a in addresses)
    if n == 0 or words.shape[1] == 0:
        return Attribution(n, (), sample)
    regions = classify_words(words, addresses, object_size, namer.ranges)
    offsets = []
    for column in range(words.shape[1]):
        seen = Counter(zip(words[:, column].tolist(), regions[:, column].tolist(), strict=True))
        kind_of = {pair: namer.kind(*pair) for pair in seen}
        kinds: Counter[str] = Counter()
        for pair, count in seen.items():
            kinds[kind_of[pair]] += count
        kind, count = _most(kinds)
        # Only the dominant class's words are named: naming an address in
        # the kernel image reads the kernel's kallsyms.
        targets: Counter[str] = Counter()
        for pair, times in seen.items():
            if kind_of[pair] == kind:
                target = namer.name(*pair).target
                if target:
                    targets[target] += times
        name, named = _most(targets) if targets else (None, 0)
        offsets.append(OffsetAttribution(column * 8, kind, count / n, name, named / n))
    return Attribution(n, tuple(offsets), sample)


def attribute_clusters(
    namer: WordNamer, clusters: Sequence[Cluster], object_size: int, top: int = TOP_CLUSTERS
) -> list[Attribution]:
    """
    Attribute the first *top* of *clusters* (most objects first), each on
    the lowest :data:`SAMPLE_OBJECTS` example addresses of the cluster and
    its members; clusters seen only in context windows get an empty one.
    """
    return [
        attribute_objects(
            namer,
            sample_addresses([cluster.examples, *(m.examples for m in cluster.members)]),
            object_size,
        )
        for cluster in clusters[:top]
    ]


def _most(counts: Counter[str]) -> tuple[str, int]:
    """The most frequent key of *counts*, ties broken by the key."""
    return min(counts.items(), key=lambda item: (-item[1], item[0]))


def sample_addresses(groups: Iterable[Iterable[int]], limit: int = SAMPLE_OBJECTS) -> list[int]:
    """The lowest *limit* distinct addresses of *groups* (a cluster's examples, its members')."""
    return sorted({a for group in groups for a in group})[:limit]


def attribute_objects(namer: WordNamer, addresses: list[int], object_size: int) -> Attribution:
    """
    Read the objects at *addresses* (each *object_size* bytes, or its first
    :data:`MAX_WORDS` words) from the dump and attribute them; objects that
    cannot be read are left out of the sample.
    """
    size = min(object_size, MAX_WORDS * 8)
    kept, data = [], []
    for address in addresses:
        try:
            data.append(namer.prog.read(address, size))
        except FaultError:
            continue
        kept.append(address)
    rows = np.frombuffer(b"".join(data), dtype=np.uint8).reshape(len(kept), size)
    return attribute_rows(namer, rows, np.array(kept, dtype=np.uint64), object_size)
