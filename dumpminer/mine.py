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

import gc
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from drgn import Object, Program
from tqdm import tqdm

from dumpminer.caches import CacheUsage, cache_usage, resolve_caches
from dumpminer.cluster import cluster_fragments, sort_fragments
from dumpminer.dump import Dump
from dumpminer.errors import UsageError
from dumpminer.fragments import DEFAULT_MIN_LENGTH, BatchCounts, count_context, count_objects
from dumpminer.interrupts import signals_noted
from dumpminer.pointers import mask_kernel_pointers
from dumpminer.report import Report
from dumpminer.sample import SampleSpec, sample_pages
from dumpminer.tally import DEFAULT_MAX_FRAGMENTS, FragmentTally
from dumpminer.walk import Slab, SlabPage, WalkStats, find_slab_pages, walk_slabs

#: Bytes of objects gathered before one vectorised extraction pass.
BATCH_BYTES = 16 << 20
#: Threads counting batches while the walk goes on (the machines this is
#: measured on have two CPUs; more threads only add memory).
COUNTING_THREADS = 2
#: Caches with fewer objects are mined in one process.
PARALLEL_OBJECTS = 10_000_000
#: Most processes one mining run starts.
MAX_WORKERS = 8
#: Largest context window on either side of an object.
MAX_CONTEXT = 1 << 20


@dataclass(frozen=True)
class MineOptions:
    """What to read around each object and what to count: one run's settings."""

    #: Context bytes read before and after each object.
    before: int = 0
    after: int = 0
    #: Shortest printable run counted.
    min_length: int = DEFAULT_MIN_LENGTH
    #: Distinct fragments kept before the rarest are dropped (None: no bound).
    max_fragments: int | None = DEFAULT_MAX_FRAGMENTS
    #: Keep per-slab sums for sampling intervals (see dumpminer/sample.py).
    per_slab: bool = False
    #: Blank kernel pointers in objects first (dumpminer/pointers.py; for diff).
    mask_pointers: bool = False

    def new_tally(self) -> FragmentTally:
        """An empty tally for these options."""
        return FragmentTally(self.max_fragments, per_slab=self.per_slab)

    def check(self) -> None:
        """Raise :class:`UsageError` for values out of range."""
        if self.min_length < 1:
            raise UsageError("--min-length must be at least 1")
        if not (0 <= self.before <= MAX_CONTEXT and 0 <= self.after <= MAX_CONTEXT):
            raise UsageError(f"context must be between 0 and {MAX_CONTEXT} bytes")
        if self.max_fragments is not None and self.max_fragments < 1:
            raise UsageError("--max-fragments must be at least 1")


@dataclass
class _Batch:
    """Slabs of one cache waiting for extraction, in address order."""

    slabs: list[Slab] = field(default_factory=list)
    nbytes: int = 0


def batch_rows(
    slabs: list[Slab],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint64], npt.NDArray[np.bool_] | None]:
    """
    The objects of *slabs* (all of one cache) as rows of ``object_size``
    bytes, their addresses, and which of them are allocated (None when all
    are, as in the full slabs that make up most of a leaking cache). Rows
    keep the slabs' order, so addresses ascend when the slabs do.
    """
    layout = slabs[0].layout
    stride, size = layout.stride, layout.object_size
    counts = np.array([slab.objects for slab in slabs], dtype=np.int64)
    total = int(counts.sum())
    if any(slab.before or slab.after for slab in slabs):
        region = b"".join(
            memoryview(slab.data)[slab.before : slab.before + slab.objects * stride]
            for slab in slabs
        )
    else:
        region = b"".join([slab.data for slab in slabs])
    rows = np.frombuffer(region, dtype=np.uint8).reshape(total, stride)[:, :size]
    first = np.repeat(np.cumsum(counts) - counts, counts)
    bases = np.repeat(np.array([slab.base for slab in slabs], dtype=np.uint64), counts)
    index = (np.arange(total, dtype=np.int64) - first).astype(np.uint64)
    addresses = bases + index * np.uint64(stride)
    if all(slab.full for slab in slabs):
        return rows, addresses, None
    allocated = np.concatenate([slab.allocated for slab in slabs])
    return rows, addresses, allocated


def context_rows(
    slab: Slab,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """The context windows before and after each allocated object of *slab*."""
    layout = slab.layout
    view = np.frombuffer(slab.data, dtype=np.uint8)
    n, stride = slab.objects, layout.stride
    index = np.flatnonzero(slab.allocated)
    windows = np.lib.stride_tricks.as_strided
    before = windows(view, shape=(n, slab.before), strides=(stride, 1))[index]
    tail = view[slab.before + layout.object_size :]
    after = windows(tail, shape=(n, slab.after), strides=(stride, 1))[index]
    return before, after


class _Miner:
    """
    Feeds slabs into a tally in batches, one batch per cache.

    Counting a batch is array work that runs with the GIL released, so
    batches are counted on :data:`COUNTING_THREADS` threads while the walk
    reads the next ones. Counted batches are absorbed into the tally in the
    order they were gathered, on the walking thread, so the result is the
    same as in one thread, bounded tally included. At most that many
    batches wait at once, which bounds memory.
    """

    def __init__(self, options: MineOptions) -> None:
        self.min_length = options.min_length
        self.per_slab = options.per_slab
        self.mask_pointers = options.mask_pointers
        self.tally = options.new_tally()
        self.batches: dict[int, _Batch] = {}
        self.counter = ThreadPoolExecutor(COUNTING_THREADS, thread_name_prefix="dumpminer")
        self.pending: deque[Future[list[BatchCounts]]] = deque()

    def add(self, slab: Slab) -> None:
        key = slab.layout.address
        batch = self.batches.setdefault(key, _Batch())
        batch.slabs.append(slab)
        # Context windows are copied per object, so they weigh in too: with
        # large windows a batch holds fewer slabs, not more memory.
        batch.nbytes += len(slab.data) + slab.objects * (slab.before + slab.after)
        if batch.nbytes >= BATCH_BYTES:
            self.flush(key)

    def flush(self, key: int) -> None:
        batch = self.batches.pop(key, None)
        if batch is None or not batch.slabs:
            return
        while len(self.pending) >= COUNTING_THREADS:
            self._absorb_oldest()
        self.pending.append(self.counter.submit(self._count, batch))

    def _absorb_oldest(self) -> None:
        # Wait before taking the batch off the queue, so that a Ctrl-C while
        # waiting leaves it there for finish() instead of losing its counts.
        counted = self.pending[0].result()
        self.pending.popleft()
        for counts in counted:
            self.tally.absorb(counts)

    def _count(self, batch: _Batch) -> list[BatchCounts]:
        rows, addresses, allocated = batch_rows(batch.slabs)
        if allocated is not None:
            rows, addresses = rows[allocated], addresses[allocated]
        if self.mask_pointers:
            rows = mask_kernel_pointers(rows)
        slab_of_row = None
        if self.per_slab:
            counts = [slab.objects for slab in batch.slabs]
            slab_of_row = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
            if allocated is not None:
                slab_of_row = slab_of_row[allocated]
        out = [
            count_objects(
                rows,
                addresses,
                self.min_length,
                slab_of_row,
                len(batch.slabs),
            )
        ]
        if batch.slabs[0].before or batch.slabs[0].after:
            windows = [context_rows(slab) for slab in batch.slabs]
            for side in (0, 1):
                joined = np.concatenate([w[side] for w in windows])
                if joined.shape[1]:
                    out.append(count_context(joined, self.min_length))
        return out

    def finish(self) -> FragmentTally:
        try:
            for key in list(self.batches):
                self.flush(key)
            while self.pending:
                self._absorb_oldest()
        finally:
            self.close()
        return self.tally

    def close(self) -> None:
        """Stop the counting threads (after finish(), or when the walk failed)."""
        self.counter.shutdown(wait=True, cancel_futures=True)


def _dump_facts(prog: Program, dump: Dump | None) -> dict[str, Any]:
    if dump is not None:
        return {
            "path": dump.path,
            "osrelease": dump.info.osrelease,
            "format": dump.info.format,
            "build_id": dump.info.build_id,
            "vmlinux": dump.vmlinux,
        }
    release = prog["UTS_RELEASE"].string_().decode(errors="replace")
    return {"path": None, "osrelease": release, "format": None, "build_id": None, "vmlinux": None}


def default_workers(pages: list[SlabPage]) -> int:
    """
    Processes worth starting for *pages*. One process already keeps two
    CPUs busy (the walk, and counting on threads), and on 2-CPU machines two
    workers were not clearly faster than one (docs/performance.md: 5.33 s
    against 5.68 s in one run, 5.11 s against 5.03 s in another, for 31
    million objects), while each costs start-up and memory.
    So caches are split only on machines with four CPUs or more, one worker
    per two CPUs, and only from :data:`PARALLEL_OBJECTS` objects.
    """
    objects = sum(page.objects for page in pages)
    cpus = len(os.sched_getaffinity(0))
    if objects < PARALLEL_OBJECTS or cpus < 4:
        return 1
    return min(MAX_WORKERS, cpus // 2)


def mine_pages(
    prog: Program,
    caches: list[Object],
    pages: list[SlabPage],
    options: MineOptions,
    progress: Callable[[int], object] = lambda n: None,
    stop: Callable[[], bool] = lambda: False,
) -> tuple[FragmentTally, WalkStats, bool]:
    """
    Walk the slabs at *pages* and tally their fragments: the work of one
    process. Returns the tally, what the walk saw, and whether it was
    interrupted (Ctrl-C, or *stop* returning True) before the end.
    """
    stats = WalkStats()
    miner = _Miner(options)
    partial = False
    try:
        # Runs of full slabs are read as one, except when sampling, whose
        # intervals need counts per slab.
        slabs = walk_slabs(
            prog, caches, options.before, options.after, stats, pages, not options.per_slab
        )
        for slab in slabs:
            miner.add(slab)
            progress(slab.objects)
            if stop():
                partial = True
                break
    except KeyboardInterrupt:
        partial = True
    except BaseException:
        miner.close()
        raise
    with signals_noted() as late:
        tally = miner.finish()
    stats.late_signals += late
    return tally, stats, partial


@contextmanager
def _gc_paused() -> Iterator[None]:
    """
    Pause the cyclic garbage collector: a walk allocates a dict entry per
    fragment and no cycles, and with a large heap the collector's passes cost
    more than the work itself (a third of clustering time on the big sample).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def mine(
    prog: Program,
    cache: str,
    *,
    before: int = 0,
    after: int = 0,
    min_length: int = DEFAULT_MIN_LENGTH,
    progress: bool = False,
    dump: Dump | None = None,
    workers: int | None = None,
    max_fragments: int | None = DEFAULT_MAX_FRAGMENTS,
    sample: SampleSpec | None = None,
    mask_pointers: bool = False,
) -> Report:
    """
    Mine every allocated object of the cache(s) named *cache* for printable
    fragments of at least *min_length* bytes, with *before* and *after* bytes
    of neighbouring memory counted apart. Returns the report; when
    interrupted (Ctrl-C), the report of what was walked so far, marked
    partial. With *sample*, only a seeded random share of the slabs is
    mined and counts are scaled (:mod:`dumpminer.sample`).

    With *dump* (from :func:`~dumpminer.dump.open_dump`), large caches are
    split over *workers* processes (default: :func:`default_workers`), each
    with its own drgn program; their counts merge exactly. With
    *mask_pointers*, kernel addresses in objects are blanked first
    (:mod:`dumpminer.pointers`), as ``diff`` does.
    """
    options = MineOptions(
        before,
        after,
        min_length,
        max_fragments,
        per_slab=sample is not None,
        mask_pointers=mask_pointers,
    )
    options.check()
    with _gc_paused():
        return _mine(prog, cache, options, progress, dump, workers, sample)


def _mine(
    prog: Program,
    cache: str,
    options: MineOptions,
    progress: bool,
    dump: Dump | None,
    workers: int | None,
    sample: SampleSpec | None,
) -> Report:
    """:func:`mine`, once its arguments are checked."""
    started = time.monotonic()
    caches = resolve_caches(prog, cache)
    usages = [cache_usage(c) for c in caches]
    stats = WalkStats()
    pages = found = find_slab_pages(prog, {u.address for u in usages}, stats, progress)
    if sample is not None:
        pages = sample_pages(found, sample)
    bar = tqdm(
        total=sum(p.objects for p in pages),
        unit="obj",
        unit_scale=True,
        desc=f"mining {cache}",
        disable=not progress,
        leave=False,
    )
    jobs = workers if workers is not None else default_workers(pages)
    try:
        if jobs > 1 and dump is not None:
            from dumpminer.workers import mine_in_workers

            tally, walked, partial = mine_in_workers(dump, caches, pages, options, jobs, bar.update)
        else:
            tally, walked, partial = mine_pages(prog, caches, pages, options, bar.update)
    finally:
        bar.close()
    stats.merge(walked)
    with signals_noted() as late:
        report = _report(
            prog, cache, options, dump, usages, stats, tally, pages, found, partial, sample, started
        )
    report.late_signals = stats.late_signals + late
    return report


def _report(
    prog: Program,
    cache: str,
    options: MineOptions,
    dump: Dump | None,
    usages: list[CacheUsage],
    stats: WalkStats,
    tally: FragmentTally,
    pages: list[SlabPage],
    found: list[SlabPage],
    partial: bool,
    sample: SampleSpec | None,
    started: float,
) -> Report:
    """Sort, cluster and put together the report of a walk."""
    fragments = sort_fragments(tally.fragments.values())
    clusters = cluster_fragments(fragments, tally.templates)
    if options.per_slab:
        for cluster, spread in zip(clusters, tally.cluster_spreads(clusters), strict=True):
            cluster.slab_square, cluster.slab_cross = spread.square, spread.cross
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
            "context_before": options.before,
            "context_after": options.after,
            "min_length": options.min_length,
            "pointers_masked": options.mask_pointers,
            "seconds": round(time.monotonic() - started, 3),
            "faults": stats.faults,
            "fault_addresses": [f"{a:#x}" for a in stats.fault_slabs],
            "corrupt_slabs": stats.corrupt_slabs,
            "corrupt_slab_addresses": [f"{a:#x}" for a in stats.corrupt_slab_addresses],
            "cpu_freelist_errors": stats.cpu_errors,
            "exact": tally.exact,
            "complete": tally.complete,
            "max_fragments": options.max_fragments,
            "dropped_fragments": tally.dropped_fragments,
            "folded_fragments": tally.folded_fragments,
            "folded_templates": len(tally.templates),
            "error_bound": tally.error_bound,
        },
        fragments=fragments,
        clusters=clusters,
        partial=partial,
        progress={"slabs_walked": stats.slabs, "slabs_found": len(pages)} if partial else {},
        sample=None
        if sample is None
        else {
            "fraction": sample.fraction,
            "objects": sample.objects,
            "seed": sample.seed,
            "slabs_sampled": len(pages),
            "slabs_total": len(found),
            "objects_sampled": stats.objects_scanned,
            "slabs_read": tally.slabs_seen,
            "slab_objects_square": tally.slab_objects_square,
            "population": sum(u.allocated for u in usages),
        },
    )
