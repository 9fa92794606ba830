"""
Mining with several processes: the slab pages of a cache are split into
contiguous shares, each worker opens its own drgn program on the same dump
and mines its share, and the tallies merge exactly.

Workers ignore SIGINT, which reaches the whole process group; the parent
turns it (and SIGTERM, which the CLI turns into the same interrupt) into a
shared stop flag, so that every worker returns what it has and the report
comes out partial instead of lost. A worker that dies (killed, out of
memory) ends the run with a one-line error, never a hang.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from itertools import pairwise
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import numpy as np
from drgn import Object

from dumpminer.dump.open import Dump, open_dump
from dumpminer.errors import DumpminerError
from dumpminer.extract.observers import ObjectObserver
from dumpminer.scan.engine import PassOptions, PassResult, mine_pages
from dumpminer.slub.walk import SlabPages, WalkStats

#: Seconds between two looks at the workers' progress.
POLL_SECONDS = 0.1

_done: Synchronized[int] | None = None
_stop: Synchronized[int] | None = None


def split_pages(pages: SlabPages, shares: int) -> list[SlabPages]:
    """Split *pages* into *shares* contiguous runs of about equal objects."""
    total = pages.total_objects()
    # Objects before each page: a page goes to the share its first object falls in.
    seen = np.cumsum(pages.objects) - pages.objects
    share = np.minimum(shares - 1, seen * shares // max(total, 1))
    bounds = np.searchsorted(share, np.arange(shares + 1))
    runs = [pages[a:b] for a, b in pairwise(bounds.tolist())]
    return [run for run in runs if len(run)]


def _init_worker(done: Synchronized[int], stop: Synchronized[int]) -> None:
    # Ctrl-C reaches the whole process group; the parent turns it into the
    # stop flag. SIGTERM keeps its default, so a worker can always be ended.
    global _done, _stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _done, _stop = done, stop


def _progress(objects: int) -> None:
    assert _done is not None
    with _done.get_lock():
        _done.value += objects


def _stopped() -> bool:
    assert _stop is not None
    return bool(_stop.value)


def _work(
    vmcore: str,
    vmlinux: str | None,
    cache_addresses: list[int],
    pages: SlabPages,
    options: PassOptions,
) -> PassResult:
    """One worker: open the dump, mine *pages*."""
    prog = open_dump(vmcore, vmlinux, use_vmlinux=vmlinux is not None).prog
    caches = [Object(prog, "struct kmem_cache *", value=a) for a in cache_addresses]
    return mine_pages(prog, caches, pages, options, _progress, _stopped)


def mine_in_workers(
    dump: Dump,
    caches: list[Object],
    pages: SlabPages,
    options: PassOptions,
    workers: int,
    progress: Callable[[int], Any],
) -> PassResult:
    """
    Mine *pages* of *caches* in *workers* processes; returns their merged
    results (tally, walk statistics, observers) and whether the walk was
    interrupted.
    """
    context = multiprocessing.get_context("spawn")
    done = context.Value("q", 0)
    stop = context.Value("i", 0)
    shares = split_pages(pages, workers)
    addresses = [cache.value_() for cache in caches]
    tally, stats, partial = options.new_tally(), WalkStats(), False
    observers: list[ObjectObserver] | None = None
    processes: list[int] = []
    pool = ProcessPoolExecutor(len(shares), context, _init_worker, (done, stop))
    try:
        # Workers start as tasks are submitted: they start with SIGINT
        # ignored, so a Ctrl-C then cannot kill one before _init_worker runs.
        with _ignoring_sigint():
            futures = [
                pool.submit(_work, dump.path, dump.vmlinux, addresses, share, options)
                for share in shares
            ]
        reported = 0
        while True:
            try:
                finished = all(f.done() for f in futures)
                current = done.value
                progress(current - reported)
                reported = current
                if finished:
                    break
                time.sleep(POLL_SECONDS)
            except KeyboardInterrupt:
                stop.value = 1
                partial = True
        for future in futures:
            try:
                share = future.result()
            except BrokenProcessPool as e:
                raise DumpminerError(f"a worker process died: {e}") from e
            tally.merge(share.tally)
            stats.merge(share.stats)
            processes.extend(share.processes)
            partial = partial or share.partial
            if observers is None:
                observers = share.observers
            else:
                for mine, theirs in zip(observers, share.observers, strict=True):
                    mine.merge(theirs)
    finally:
        # Sentinels, not signals, end the workers: nothing waits on a
        # worker that cannot be stopped.
        pool.shutdown(wait=True, cancel_futures=True)
    return PassResult(tally, stats, partial, observers or [], tuple(processes))


@contextmanager
def _ignoring_sigint() -> Iterator[None]:
    """Ignore SIGINT in this block, where it can be changed (the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
