"""
Pointer noise: whether the bytes of kernel pointers would swamp a mine's
tally, decided before the walk from a probe of the cache's slabs.

A kernel pointer's low bytes are sometimes printable. Which ones depends on
the boot: KASLR places the direct map at a random 1 GiB step, and when the
base's fifth byte is printable (``0xffff8b31...``: about one boot in three),
every pointer into the direct map ends in a printable byte, so its bytes make
runs of three to six characters. A cache of linked records then holds
millions of distinct such runs, each in a handful of objects. They fill the
bounded tally (:mod:`dumpminer.tally`), which from then on folds and drops
for the rest of the walk: on a dump of the story's size, three times the
time, four times the memory, and an inexact report, for runs that say
nothing a reader needs (the attribution says where those pointers go).

So :func:`dumpminer.mine`, unless told (``--mask-pointers``,
``--keep-pointers``), first reads an evenly spread share of the slabs
(:data:`PROBE_FRACTION`), counts there the runs made only of kernel-pointer
bytes (:func:`~dumpminer.pointers.kernel_pointer_bytes`), and estimates how
many distinct such runs the whole walk would meet (:func:`heaps_estimate`,
from how their number grew from half the probe to all of it). Only when
that estimate is over the bound are kernel pointers blanked for the walk,
as ``--mask-pointers`` does; the report's ``scan.pointer_noise`` says what
was seen and decided. On every other dump the raw counts are kept. A string
never loses a byte to this: a word holding a kernel address has its top two
bytes at 0x80 or above, so no printable run is inside it but the pointer's
own low bytes.
"""

from __future__ import annotations

import math

import numpy as np
from drgn import Object, Program

from dumpminer.engine import batch_rows
from dumpminer.fragments import count_objects
from dumpminer.pointers import WORD, kernel_pointer_bytes
from dumpminer.reportdata import PointerNoise
from dumpminer.walk import Slab, SlabPages, WalkStats, walk_slabs

#: Share of the slabs the probe reads (at least :data:`PROBE_MIN_SLABS`).
PROBE_FRACTION = 0.01
PROBE_MIN_SLABS = 2048
#: Slabs counted at once while probing.
_PROBE_BATCH = 1024
#: Most runs of three or more bytes one word holding a kernel address can
#: make: bytes 0 to 5 (bytes 6 and 7 are never printable), split once.
_RUNS_PER_WORD = 2


def heaps_estimate(seen: int, seen_in_half: int, scale: float) -> int:
    """
    How many distinct runs a walk *scale* times the size of a probe meets,
    when the probe met *seen* and its every other slab *seen_in_half*: the
    growth from half the probe to all of it, ``seen ~ slabs ** a`` (Heaps'
    law), carried on to the whole walk. Runs local to a few slabs (a pointer
    to a neighbouring object) grow with every slab read, ``a`` near 1; runs
    shared across the cache (pointers to a few tables) stop growing, ``a``
    near 0. Where the curve flattens further out, this overestimates.
    """
    if seen == 0 or scale <= 1:
        return seen
    growth = math.log2(seen / seen_in_half) if seen_in_half else 1.0
    return math.ceil(seen * math.pow(scale, min(1.0, max(0.0, growth))))


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


def _pointer_runs(
    slabs: list[Slab], first: int, min_length: int, seen: set[bytes], seen_in_half: set[bytes]
) -> int:
    """
    Add the runs of kernel-pointer bytes in *slabs*, the probe's slabs from
    number *first* on, to *seen*, and those in its even-numbered slabs (every
    other slab) to *seen_in_half*; returns the allocated objects read.
    """
    rows, addresses, allocated = batch_rows(slabs)
    slab_of_row = np.repeat(np.arange(len(slabs)), [slab.objects for slab in slabs])
    if allocated is not None:
        rows, addresses, slab_of_row = rows[allocated], addresses[allocated], slab_of_row[allocated]
    pointers = kernel_pointer_bytes(rows[:, : slabs[0].layout.object_size])
    counts = count_objects(pointers, addresses, min_length, slab_of_row, len(slabs))
    seen.update(counts.texts)
    in_half = np.unique(counts.slab_text[(counts.slab_index + first) % 2 == 0])
    seen_in_half.update(counts.texts[i] for i in in_half.tolist())
    return len(rows)


def probe_pointer_noise(
    prog: Program,
    caches: list[Object],
    pages: SlabPages,
    min_length: int,
    max_fragments: int | None,
) -> PointerNoise | None:
    """
    Whether the walk of *pages* should blank kernel pointers: None when no
    probe was needed (no bound, or too few words for their runs to reach
    it), else what the probe saw and decided.
    """
    if max_fragments is None or not pages:
        return None
    threshold = max_fragments
    words = max(cache.object_size.value_() for cache in caches) // WORD
    if pages.total_objects() * words * _RUNS_PER_WORD <= threshold:
        return None
    probed = probe_pages(pages)
    seen: set[bytes] = set()
    seen_in_half: set[bytes] = set()
    objects = slabs_read = 0
    batch: list[Slab] = []
    for slab in walk_slabs(prog, caches, stats=WalkStats(), pages=probed):
        if len(batch) >= _PROBE_BATCH or (batch and batch[0].layout is not slab.layout):
            objects += _pointer_runs(batch, slabs_read - len(batch), min_length, seen, seen_in_half)
            batch = []
        batch.append(slab)
        slabs_read += 1
    if batch:
        objects += _pointer_runs(batch, slabs_read - len(batch), min_length, seen, seen_in_half)
    scale = pages.total_objects() / max(1, probed.total_objects())
    estimate = heaps_estimate(len(seen), len(seen_in_half), scale)
    return PointerNoise(
        slabs_probed=slabs_read,
        objects_probed=objects,
        runs_seen=len(seen),
        runs_seen_in_half=len(seen_in_half),
        runs_estimated=estimate,
        threshold=threshold,
        masked=estimate > threshold,
    )
