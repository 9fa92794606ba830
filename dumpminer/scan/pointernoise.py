"""
Pointer noise: whether the bytes of kernel pointers would swamp a mine's
tally, decided before the walk from a probe of the cache's slabs.

A kernel pointer's low bytes are sometimes printable. Which ones depends on
the boot: KASLR places the direct map at a random 1 GiB step, and when the
base's fifth byte is printable (``0xffff8b31...``: about one boot in three),
every pointer into the direct map ends in a printable byte, so its bytes make
runs of three to six characters. A cache of linked records then holds
millions of distinct such runs, each in a handful of objects. They fill the
bounded tally (:mod:`dumpminer.clustering.tally`), which from then on folds and drops
for the rest of the walk: on a dump of the story's size, three times the
time, four times the memory, and an inexact report, for runs that say
nothing a reader needs (the attribution says where those pointers go).

So :func:`dumpminer.pipeline`, unless told (``--mask-pointers``,
``--keep-pointers``), first reads an evenly spread share of the slabs
(:data:`PROBE_FRACTION`), counts there the distinct runs made only of
kernel-pointer bytes (:func:`~dumpminer.extract.pointers.kernel_pointer_bytes`), and
scales the runs it saw in one probed slab only by the share of the cache it
read (:func:`walk_estimate`). That is what the walk meets when such runs sit
in a few neighbouring slabs (pointers to neighbouring records: the noisy
case), and more than it meets when they recur across the cache unseen (runs
seen in two probed slabs, far apart, recur, and are not scaled). Only when
that upper estimate is over the bound are kernel pointers blanked for the walk, as
``--mask-pointers`` does; the report's ``scan.pointer_noise`` says what was
seen and decided. On every other dump the raw counts are kept.

Estimating the runs the walk would meet more closely was tried and dropped:
Chao's estimators (from runs seen once and twice, per object or per slab)
and the growth from half the probe to all of it each missed by ten times on
one sample or another, as runs recur in neighbouring slabs and, with the
address bits they hold, across gigabytes. Probing clumps of 16 neighbouring
slabs (one read each, 0.01 s less on big) left too few clumps to see runs
recur: huge's 37,000 runs were estimated at 1.3 million. An estimate too high costs little:
a string never loses a byte to blanking (a word holding a kernel address has
its top two bytes at 0x80 or above, so the only printable run inside it is
the pointer's own low bytes), the attribution still says where the pointers
go, and the report says what was blanked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from drgn import Object, Program

from dumpminer.extract.fragments import scan_runs
from dumpminer.extract.pointers import WORD, kernel_pointer_bytes
from dumpminer.scan.engine import batch_rows, slab_of_rows
from dumpminer.slub.walk import Slab, SlabPages, WalkStats, walk_slabs

#: Share of the slabs the probe reads (at least :data:`PROBE_MIN_SLABS`).
PROBE_FRACTION = 0.01
PROBE_MIN_SLABS = 1024
#: Slabs counted at once while probing.
_PROBE_BATCH = 1024
#: The printable bytes of a word holding a kernel address: bytes 0 to 5
#: (bytes 6 and 7 are 0x80 or above), so at most two runs of three or more.
_POINTER_PRINTABLE = 6
_RUNS_PER_WORD = 2


@dataclass(frozen=True, kw_only=True)
class PointerNoise:
    """
    The ``scan.pointer_noise`` object: what the probe for runs of kernel-pointer
    bytes saw, and whether the walk blanked kernel pointers for it
    (:mod:`dumpminer.scan.pointernoise`).
    """

    slabs_probed: int
    objects_probed: int
    #: Distinct runs made only of kernel-pointer bytes in the probed objects,
    #: and how many of them one probed slab held and no other.
    runs_seen: int
    runs_seen_in_one_slab: int
    #: At most how many distinct such runs the walk would meet: those seen in
    #: one slab scaled by the share of the cache probed, plus the others;
    #: exact when every slab was probed.
    runs_estimated: int
    #: Blank pointers when the estimate is over this (--max-fragments).
    threshold: int
    masked: bool

    def to_json(self) -> dict[str, Any]:
        """The ``scan.pointer_noise`` object of the JSON document."""
        return {
            "slabs_probed": self.slabs_probed,
            "objects_probed": self.objects_probed,
            "runs_seen": self.runs_seen,
            "runs_seen_in_one_slab": self.runs_seen_in_one_slab,
            "runs_estimated": self.runs_estimated,
            "threshold": self.threshold,
            "masked": self.masked,
        }



def probe_pages(pages: SlabPages, fraction: float | None = None) -> SlabPages:
    """
    An evenly spread share of *pages* (all of them when few), in their order:
    *fraction* of them, :data:`PROBE_FRACTION` by default.
    """
    share = PROBE_FRACTION if fraction is None else fraction
    count = max(PROBE_MIN_SLABS, math.ceil(len(pages) * share))
    if count >= len(pages):
        return pages
    return pages.take(np.unique(np.linspace(0, len(pages) - 1, count).astype(np.intp)))


def _pointer_runs(slabs: list[Slab], min_length: int, seen: dict[bytes, int]) -> int:
    """
    Add the runs of kernel-pointer bytes in *slabs* to *seen* (text -> how
    many slabs hold it); returns the allocated objects read.
    """
    rows, _, allocated = batch_rows(slabs)
    slab_of_row = slab_of_rows(slabs, allocated)
    if allocated is not None:
        rows = rows[allocated]
    pointers = kernel_pointer_bytes(rows[:, : slabs[0].layout.object_size])
    scan = scan_runs(pointers, min_length, slab_of_row=slab_of_row, keep_runs=False)
    held = np.bincount(scan.slab_text, minlength=len(scan.texts)).tolist()
    for text, slabs_holding in zip(scan.texts, held, strict=True):
        seen[text] = seen.get(text, 0) + slabs_holding
    return len(rows)


def walk_estimate(seen: int, seen_in_one_slab: int, scale: float) -> int:
    """
    At most how many distinct runs a walk *scale* times the size of a probe
    meets, when the probe saw *seen*, *seen_in_one_slab* of them in one of
    its slabs only. A run seen in two probed slabs, far apart, recurs across
    the cache: the walk meets it again, not more of its like. A run seen in
    one slab may be local to it, as a pointer to a neighbouring record is:
    each share of the cache like the probe holds as many.
    """
    return (seen - seen_in_one_slab) + math.ceil(seen_in_one_slab * max(scale, 1.0))


def probe_pointer_noise(
    prog: Program,
    caches: list[Object],
    pages: SlabPages,
    min_length: int,
    max_fragments: int | None,
) -> PointerNoise | None:
    """
    Whether the walk of *pages* should blank kernel pointers: None when no
    probe was needed (no bound, runs longer than a pointer's printable bytes,
    or too few words for their runs to reach the bound), else what the probe
    saw and decided.
    """
    if max_fragments is None or not pages or min_length > _POINTER_PRINTABLE:
        return None
    threshold = max_fragments
    words = max(cache.object_size.value_() for cache in caches) // WORD
    if pages.total_objects() * words * _RUNS_PER_WORD <= threshold:
        return None
    probed = probe_pages(pages)
    seen: dict[bytes, int] = {}
    objects = 0
    batch: list[Slab] = []
    for slab in walk_slabs(prog, caches, stats=WalkStats(), pages=probed):
        if len(batch) >= _PROBE_BATCH or (batch and batch[0].layout is not slab.layout):
            objects += _pointer_runs(batch, min_length, seen)
            batch = []
        batch.append(slab)
    if batch:
        objects += _pointer_runs(batch, min_length, seen)
    in_one = sum(1 for slabs_holding in seen.values() if slabs_holding == 1)
    scale = pages.total_objects() / max(1, probed.total_objects())
    estimate = walk_estimate(len(seen), in_one, scale)
    return PointerNoise(
        slabs_probed=len(probed),
        objects_probed=objects,
        runs_seen=len(seen),
        runs_seen_in_one_slab=in_one,
        runs_estimated=estimate,
        threshold=threshold,
        masked=estimate > threshold,
    )
