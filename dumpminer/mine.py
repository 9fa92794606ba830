"""
Mining a cache: walk it, extract fragments from every allocated object, tally
and cluster them into a :class:`~dumpminer.report.Report`.

This is the library entry point; it works on any drgn program, so from drgn's
REPL::

    >>> import dumpminer
    >>> report = dumpminer.mine(prog, "kmalloc-32")
    >>> print(dumpminer.render(report, "table"))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from drgn import Program
from tqdm import tqdm

from dumpminer.caches import cache_usage, resolve_caches
from dumpminer.cluster import cluster_fragments, fragment_sort_key
from dumpminer.dump import Dump
from dumpminer.errors import UsageError
from dumpminer.fragments import DEFAULT_MIN_LENGTH, FragmentTally
from dumpminer.report import Report
from dumpminer.walk import Slab, WalkStats, find_slab_pages, walk_slabs

#: Objects gathered before one vectorised extraction pass.
BATCH_OBJECTS = 1 << 16
#: Largest context window on either side of an object.
MAX_CONTEXT = 1 << 20


@dataclass
class _Batch:
    """Object rows of one width waiting for extraction."""

    rows: list[npt.NDArray[np.uint8]] = field(default_factory=list)
    addresses: list[npt.NDArray[np.uint64]] = field(default_factory=list)
    before: list[npt.NDArray[np.uint8]] = field(default_factory=list)
    after: list[npt.NDArray[np.uint8]] = field(default_factory=list)
    objects: int = 0


def slab_rows(
    slab: Slab,
) -> tuple[
    npt.NDArray[np.uint8], npt.NDArray[np.uint64], npt.NDArray[np.uint8], npt.NDArray[np.uint8]
]:
    """
    The allocated objects of *slab* as rows of bytes, their addresses, and
    the context windows before and after each of them.
    """
    layout = slab.layout
    view = np.frombuffer(slab.data, dtype=np.uint8)
    n, stride, size = slab.objects, layout.stride, layout.object_size
    index = np.flatnonzero(slab.allocated)
    start = slab.before
    rows = view[start : start + n * stride].reshape(n, stride)[index, :size]
    addresses = np.uint64(slab.base) + index.astype(np.uint64) * np.uint64(stride)
    windows = np.lib.stride_tricks.as_strided
    before = windows(view, shape=(n, slab.before), strides=(stride, 1))[index]
    after = windows(view[start + size :], shape=(n, slab.after), strides=(stride, 1))[index]
    return rows, addresses, before, after


class _Miner:
    """Feeds slabs into a tally in batches of rows of the same width."""

    def __init__(self, min_length: int) -> None:
        self.min_length = min_length
        self.tally = FragmentTally()
        self.batches: dict[int, _Batch] = {}

    def add(self, slab: Slab) -> None:
        rows, addresses, before, after = slab_rows(slab)
        batch = self.batches.setdefault(slab.layout.object_size, _Batch())
        batch.rows.append(rows)
        batch.addresses.append(addresses)
        batch.before.append(before)
        batch.after.append(after)
        batch.objects += len(rows)
        if batch.objects >= BATCH_OBJECTS:
            self.flush(slab.layout.object_size)

    def flush(self, width: int) -> None:
        batch = self.batches.pop(width, None)
        if batch is None or not batch.objects:
            return
        self.tally.add_objects(
            np.concatenate(batch.rows), np.concatenate(batch.addresses), self.min_length
        )
        for windows in (batch.before, batch.after):
            joined = np.concatenate(windows)
            if joined.shape[1]:
                self.tally.add_context(joined, self.min_length)

    def finish(self) -> FragmentTally:
        for width in list(self.batches):
            self.flush(width)
        return self.tally


def _dump_facts(prog: Program, dump: Dump | None) -> dict[str, Any]:
    if dump is not None:
        return {"path": dump.path, "osrelease": dump.info.osrelease, "format": dump.info.format}
    release = prog["UTS_RELEASE"].string_().decode(errors="replace")
    return {"path": None, "osrelease": release, "format": None}


def mine(
    prog: Program,
    cache: str,
    *,
    before: int = 0,
    after: int = 0,
    min_length: int = DEFAULT_MIN_LENGTH,
    progress: bool = False,
    dump: Dump | None = None,
) -> Report:
    """
    Mine every allocated object of the cache(s) named *cache* for printable
    fragments of at least *min_length* bytes, with *before* and *after* bytes
    of neighbouring memory counted apart. Returns the report; when
    interrupted (Ctrl-C), the report of what was walked so far, marked
    partial.
    """
    if min_length < 1:
        raise UsageError("--min-length must be at least 1")
    if not (0 <= before <= MAX_CONTEXT and 0 <= after <= MAX_CONTEXT):
        raise UsageError(f"context must be between 0 and {MAX_CONTEXT} bytes")
    started = time.monotonic()
    caches = resolve_caches(prog, cache)
    usages = [cache_usage(c) for c in caches]
    stats = WalkStats()
    pages = find_slab_pages(prog, {u.address for u in usages}, stats)
    miner = _Miner(min_length)
    partial = False
    bar = tqdm(
        total=sum(p.objects for p in pages),
        unit="obj",
        unit_scale=True,
        desc=f"mining {cache}",
        disable=not progress,
        leave=False,
    )
    try:
        for slab in walk_slabs(prog, caches, before, after, stats, pages):
            miner.add(slab)
            bar.update(slab.objects)
    except KeyboardInterrupt:
        partial = True
    finally:
        bar.close()
    tally = miner.finish()
    fragments = sorted(tally.fragments.values(), key=fragment_sort_key)
    return Report(
        dump=_dump_facts(prog, dump),
        cache={
            "name": cache,
            "caches": [u.name for u in usages],
            "object_size": max(u.object_size for u in usages),
            "allocated": sum(u.allocated for u in usages),
            "total": sum(u.total for u in usages),
            "slabs": sum(u.slabs for u in usages),
        },
        scan={
            "objects_scanned": stats.objects_scanned,
            "slabs": stats.slabs,
            "context_before": before,
            "context_after": after,
            "min_length": min_length,
            "seconds": round(time.monotonic() - started, 3),
            "faults": stats.faults,
            "fault_addresses": [f"{a:#x}" for a in stats.fault_slabs],
            "corrupt_slabs": stats.corrupt_slabs,
            "corrupt_slab_addresses": [f"{a:#x}" for a in stats.corrupt_slab_addresses],
        },
        fragments=fragments,
        clusters=cluster_fragments(fragments),
        partial=partial,
        progress={"slabs_walked": stats.slabs, "slabs_found": len(pages)} if partial else {},
    )
