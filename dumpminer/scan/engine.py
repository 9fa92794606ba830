"""
The engine of a mining run: its options, the batching of slabs, and the pass
over one process's share of slab pages (:func:`mine_pages`).

:mod:`dumpminer.pipeline` (one run, start to report) and
:mod:`dumpminer.scan.workers` (the same pass in several processes) both build on
this module, and it imports neither: imports run one way,
``mine -> workers -> engine -> walk``.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from drgn import Object, Program

from dumpminer.clustering.tally import DEFAULT_MAX_FRAGMENTS, FragmentTally
from dumpminer.errors import UsageError
from dumpminer.extract.fragments import (
    DEFAULT_MIN_LENGTH,
    BatchCounts,
    count_context,
    count_objects,
)
from dumpminer.extract.observers import (
    ObjectBatch,
    ObjectObserver,
    ObserverFactory,
    RowLabeller,
    RowLabels,
)
from dumpminer.interrupts import signals_noted
from dumpminer.slub.walk import Slab, SlabPages, WalkStats, walk_slabs

#: Bytes of objects gathered before one vectorised extraction pass.
BATCH_BYTES = 16 << 20
#: Threads counting batches while the walk goes on (the machines this is
#: measured on have two CPUs; more threads only add memory).
COUNTING_THREADS = 2
#: Largest context window on either side of an object.
MAX_CONTEXT = 1 << 20
#: Bytes past BATCH_BYTES that the reused batch buffers hold: one read of a
#: run of full slabs (dumpminer/slub/walk.py), or a slab of an order-3 cache.
MAX_SLAB_BYTES = 1 << 20


@dataclass(frozen=True)
class PassOptions:
    """
    What the pass reads around each object and what it counts: the part of
    a run's :class:`~dumpminer.options.MineOptions` that this layer sees.
    """

    #: Context bytes read before and after each object.
    before: int = 0
    after: int = 0
    #: Shortest printable run counted.
    min_length: int = DEFAULT_MIN_LENGTH
    #: Distinct fragments kept before the rarest are dropped (None: no bound).
    max_fragments: int | None = DEFAULT_MAX_FRAGMENTS
    #: Keep per-slab sums for sampling intervals (see dumpminer/slub/sampling.py).
    per_slab: bool = False
    #: Leave out the runs of kernel-pointer bytes (dumpminer/extract/pointers.py).
    mask_pointers: bool = True
    #: Analyses that see every allocated object too (:mod:`dumpminer.extract.observers`).
    observers: tuple[ObserverFactory, ...] = ()
    #: Read allocation call sites where a cache keeps alloc tracks
    #: (:mod:`dumpminer.analysis.callsites`; :func:`dumpminer.pipeline` adds the observer).
    call_sites: bool = True

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


class BatchBuffers:
    """
    Memory one counting thread reuses from batch to batch for a batch's rows
    and addresses: allocating them afresh for each batch page-faults them in
    again each time, which on a large dump cost seconds of system time.
    """

    def __init__(self) -> None:
        self.rows = np.empty(BATCH_BYTES + MAX_SLAB_BYTES, dtype=np.uint8)
        self.addresses = np.empty(0, dtype=np.uint64)

    def address_room(self, n: int) -> npt.NDArray[np.uint64]:
        """Room for *n* addresses, grown as needed."""
        if len(self.addresses) < n:
            self.addresses = np.empty(n, dtype=np.uint64)
        return self.addresses[:n]


@lru_cache(maxsize=64)
def _offsets(objects: int, stride: int) -> npt.NDArray[np.uint64]:
    """Read-only offsets of *objects* objects *stride* bytes apart."""
    offsets = np.arange(objects, dtype=np.uint64) * np.uint64(stride)
    offsets.flags.writeable = False
    return offsets


def batch_rows(
    slabs: list[Slab], buffers: BatchBuffers | None = None
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint64], npt.NDArray[np.bool_] | None]:
    """
    The objects of *slabs* (all of one cache) as rows of ``stride`` bytes
    (each object's bytes come first; see :mod:`dumpminer.extract.observers` for the
    rest), their addresses, and which of them are allocated (None when all
    are, as in the full slabs that make up most of a leaking cache). Rows
    keep the slabs' order, so addresses ascend when the slabs do. With
    *buffers*, rows (when they fit) and addresses are gathered there, and
    are valid until the buffers are used again.
    """
    layout = slabs[0].layout
    stride = layout.stride
    counts = np.array([slab.objects for slab in slabs], dtype=np.int64)
    total = int(counts.sum())
    parts = [
        memoryview(slab.data)[slab.before : slab.before + slab.objects * stride]
        if slab.before or slab.after
        else slab.data
        for slab in slabs
    ]
    if buffers is not None and len(buffers.rows) >= total * stride:
        at = 0
        for part in parts:
            buffers.rows[at : at + len(part)] = np.frombuffer(part, dtype=np.uint8)
            at += len(part)
        region: npt.NDArray[np.uint8] = buffers.rows[: total * stride]
    else:
        region = np.frombuffer(b"".join(parts), dtype=np.uint8)
    rows = region.reshape(total, stride)
    if buffers is not None:
        addresses = buffers.address_room(total)
    else:
        addresses = np.empty(total, dtype=np.uint64)
    at = 0
    for slab in slabs:
        np.add(_offsets(slab.objects, stride), np.uint64(slab.base),
               out=addresses[at : at + slab.objects])  # fmt: skip
        at += slab.objects
    if all(slab.full for slab in slabs):
        return rows, addresses, None
    allocated = np.concatenate([slab.allocated for slab in slabs])
    return rows, addresses, allocated


def slab_of_rows(
    slabs: list[Slab], allocated: npt.NDArray[np.bool_] | None
) -> npt.NDArray[np.int64]:
    """
    For the rows :func:`batch_rows` gave for *slabs*, which of the slabs
    each is in (its index in *slabs*); only the *allocated* rows, when given.
    """
    index = np.repeat(np.arange(len(slabs), dtype=np.int64), [slab.objects for slab in slabs])
    return index if allocated is None else index[allocated]


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


#: One batch's counts: fragments, and each observer's partial result.
_Counted = tuple[list[BatchCounts], list[Any]]


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

    def __init__(self, options: PassOptions) -> None:
        self.min_length = options.min_length
        self.per_slab = options.per_slab
        self.mask_pointers = options.mask_pointers
        self.tally = options.new_tally()
        self.observers: list[ObjectObserver] = [make() for make in options.observers]
        #: The first observer that labels rows (call sites), and where it is.
        self.labeller = next(
            ((i, o) for i, o in enumerate(self.observers) if isinstance(o, RowLabeller)), None
        )
        self.batches: dict[int, _Batch] = {}
        self.counter = ThreadPoolExecutor(COUNTING_THREADS, thread_name_prefix="dumpminer")
        self.pending: deque[Future[_Counted]] = deque()
        self.buffers = threading.local()

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
        counted, observed = self.pending[0].result()
        self.pending.popleft()
        for counts in counted:
            self.tally.absorb(counts)
        for observer, partial in zip(self.observers, observed, strict=True):
            observer.absorb(partial)

    def _count(self, batch: _Batch) -> _Counted:
        # Buffers per counting thread, reused: rows and addresses live until
        # this thread's next batch, so the counts, and what observers return,
        # must copy what they keep.
        buffers = getattr(self.buffers, "batch", None)
        if buffers is None:
            buffers = self.buffers.batch = BatchBuffers()
        strides, addresses, allocated = batch_rows(batch.slabs, buffers)
        if allocated is not None:
            strides, addresses = strides[allocated], addresses[allocated]
        layout = batch.slabs[0].layout
        observed = [
            observer.observe(ObjectBatch(layout, strides, addresses)) for observer in self.observers
        ]
        rows = strides[:, : layout.object_size]
        slab_of_row = slab_of_rows(batch.slabs, allocated) if self.per_slab else None
        labels: RowLabels | None = None
        if self.labeller is not None:
            where, labeller = self.labeller
            assert isinstance(labeller, RowLabeller)
            labels = labeller.row_labels(observed[where])
        out = [
            count_objects(
                rows,
                addresses,
                self.min_length,
                slab_of_row,
                len(batch.slabs),
                labels,
                blank_pointers=self.mask_pointers,
            )
        ]
        if batch.slabs[0].before or batch.slabs[0].after:
            windows = [context_rows(slab) for slab in batch.slabs]
            # Where each side's windows start: before the aligned object, or
            # right after its object_size bytes.
            misalign = (-batch.slabs[0].before % 8, layout.object_size % 8)
            for side in (0, 1):
                joined = np.concatenate([w[side] for w in windows])
                if joined.shape[1]:
                    out.append(
                        count_context(
                            joined, self.min_length, self.mask_pointers, misalign[side]
                        )
                    )
        return out, observed

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


class PassResult(NamedTuple):
    """What one pass over slab pages found."""

    tally: FragmentTally
    stats: WalkStats
    #: Interrupted (Ctrl-C, or a stop request) before the end.
    partial: bool
    #: One per factory in :attr:`PassOptions.observers`, in that order.
    observers: list[ObjectObserver]
    #: The process ids that walked the pages: this one, or each worker's.
    processes: tuple[int, ...] = ()


def mine_pages(
    prog: Program,
    caches: list[Object],
    pages: SlabPages,
    options: PassOptions,
    progress: Callable[[int], object] = lambda n: None,
    stop: Callable[[], bool] = lambda: False,
) -> PassResult:
    """
    Walk the slabs at *pages*, tally their fragments and show every
    allocated object to the options' observers: the work of one process.
    """
    stats = WalkStats()
    miner = _Miner(options)
    for observer in miner.observers:
        observer.begin(prog, caches)
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
    return PassResult(tally, stats, partial, miner.observers, (os.getpid(),))
