"""
Mining a cache: walk it, extract fragments from every allocated object, tally
and cluster them into a :class:`~dumpminer.report.render.Report`.

This is the library entry point and the orchestration of a run (resolve the
caches, find their slabs, mine them in one process or in
:mod:`~dumpminer.scan.workers`, then cluster and report); the pass over slabs
itself is :mod:`dumpminer.scan.engine`. It works on any drgn program, so from
drgn's REPL::

    >>> import dumpminer
    >>> report = dumpminer.mine(prog, "kmalloc-32")
    >>> print(dumpminer.render(report, "table"))
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from typing import Any

from drgn import FaultError, Program

from dumpminer.analysis.attribution import attribute_clusters
from dumpminer.analysis.callsites import (
    CallSiteObserver,
    call_site_report,
    shape_call_sites,
    tracked_caches,
)
from dumpminer.analysis.shapes import ShapeObserver, summarise_shapes
from dumpminer.analysis.words import KernelRanges, WordNamer
from dumpminer.clustering.cluster import cluster_fragments, gc_paused, sort_fragments
from dumpminer.clustering.tally import FragmentTally
from dumpminer.dump.open import Dump
from dumpminer.interrupts import signals_noted
from dumpminer.options import MineOptions
from dumpminer.report.model import (
    HTML_EXAMPLES,
    HTML_OBJECT_BYTES,
    CacheFacts,
    DumpFacts,
    Interruption,
    Progress,
    Report,
    SampleFacts,
    ScanFacts,
)
from dumpminer.scan.engine import PassOptions, mine_pages
from dumpminer.slub.allocator import page_array_lost, slab_allocator
from dumpminer.slub.caches import CacheUsage, cache_usage, resolve_caches
from dumpminer.slub.incomplete import incomplete_progress, reach_without_page_array
from dumpminer.slub.sampling import SampleSpec, asks_for_everything, sample_pages
from dumpminer.slub.walk import SlabPages, WalkStats, find_slab_pages, progress_bar

__all__ = ["MineOptions", "default_workers", "mine"]

#: Caches with fewer objects are mined in one process.
PARALLEL_OBJECTS = 10_000_000
#: Most processes one mining run starts.
MAX_WORKERS = 8


def _dump_facts(prog: Program, dump: Dump | None) -> DumpFacts:
    """The ``dump`` section: the dump file's facts, or the release of a caller's program."""
    if dump is not None:
        return DumpFacts(
            path=dump.path,
            osrelease=dump.info.osrelease,
            format=dump.info.format,
            build_id=dump.info.build_id,
            vmlinux=dump.vmlinux,
            debuginfo=dump.debuginfo,
        )
    release = prog["UTS_RELEASE"].string_().decode(errors="replace")
    return DumpFacts(
        path=None, osrelease=release, format=None, build_id=None, vmlinux=None, debuginfo=None
    )


def default_workers(pages: SlabPages) -> int:
    """
    Processes worth starting for *pages*. One process already keeps two
    CPUs busy (the walk, and counting on threads), and on 2-CPU machines two
    workers were not clearly faster than one (docs/performance.md: 5.33 s
    against 5.68 s in one run, 5.11 s against 5.03 s in another, for 31
    million objects), while each costs start-up and memory.
    So caches are split only on machines with four CPUs or more, one worker
    per two CPUs, and only from :data:`PARALLEL_OBJECTS` objects.
    """
    objects = pages.total_objects()
    cpus = len(os.sched_getaffinity(0))
    if objects < PARALLEL_OBJECTS or cpus < 4:
        return 1
    return min(MAX_WORKERS, cpus // 2)


def mine(
    prog: Program,
    cache: str,
    options: MineOptions | None = None,
    *,
    dump: Dump | None = None,
    **changes: Any,
) -> Report:
    """
    Mine every allocated object of the cache(s) named *cache* for printable
    fragments, as *options* say (:class:`~dumpminer.options.MineOptions`;
    keywords such as ``before=64`` change single fields of it). Returns the
    report; when interrupted (Ctrl-C), the report of what was walked so far,
    marked partial. With ``sample``, only a seeded random share of the slabs
    is mined and counts are scaled (:mod:`dumpminer.slub.sampling`).

    With *dump* (from :func:`~dumpminer.dump.open.open_dump`), large caches are
    split over ``workers`` processes (default: :func:`default_workers`), each
    with its own drgn program; their counts merge exactly. With
    ``mask_pointers`` True (the default), runs inside aligned words holding
    kernel addresses are pointer bytes, left out of the counts
    (:mod:`dumpminer.extract.pointers`); with False, counted as text.
    With ``attribution`` (the default), the top clusters' words are
    attributed and string-less objects grouped by shape
    (:mod:`dumpminer.analysis.attribution`, :mod:`dumpminer.analysis.shapes`).
    When a cache keeps allocation tracks (``slub_debug=U``), the report's
    ``call_sites`` says who allocated the objects
    (:mod:`dumpminer.analysis.callsites`); ``call_sites`` False skips reading them.

    A ``sample`` that draws every slab (a fraction of 1, or at least as many
    objects as the cache holds) reads everything, so its report is the
    exact one: not labelled sampled, counts not estimated.
    """
    options = (options or MineOptions()).changed(**changes)
    if options.sample is not None and asks_for_everything(options.sample):
        options = replace(options, sample=None)
    options.check()
    with gc_paused():
        return _mine(prog, cache, options, dump)


def _mine(prog: Program, cache: str, run: MineOptions, dump: Dump | None) -> Report:
    """:func:`mine`, once its options are checked."""
    started = time.monotonic()
    options, progress, sample = run.pass_options(), run.progress, run.sample
    # A SLAB or SLOB kernel, or a drgn without the slab internals, is refused
    # before anything else is read.
    slab_allocator(prog)
    caches = resolve_caches(prog, cache)
    if options.call_sites and tracked_caches(caches):
        # Only caches that keep alloc tracks get the call-site observer: the
        # others pay nothing for it (dumpminer/analysis/callsites.py).
        options = replace(options, observers=(*options.observers, CallSiteObserver))
    lost = page_array_lost(prog)
    usages = [cache_usage(c, lost) for c in caches]
    stats = WalkStats()
    pages = found = find_slab_pages(prog, {u.address for u in usages}, stats, progress)
    listed = None
    if stats.page_array_unread:
        found, listed = reach_without_page_array(prog, caches, found)
        pages = found
    if sample is not None:
        pages = sample_pages(found, sample)
        if len(pages) == len(found):
            sample = None  # every slab was drawn: nothing is estimated
    bar = progress_bar(progress, pages.total_objects(), "obj", f"mining {cache}")
    jobs = run.workers if run.workers is not None else default_workers(pages)
    try:
        if jobs > 1 and dump is not None:
            # Only here: multiprocessing takes about 0.004 s to import.
            from dumpminer.scan.workers import mine_in_workers

            result = mine_in_workers(dump, caches, pages, options, jobs, bar.update)
        else:
            result = mine_pages(prog, caches, pages, options, bar.update)
        tally, walked, partial = result.tally, result.stats, result.partial
        sites = next((o for o in result.observers if isinstance(o, CallSiteObserver)), None)
        shapes = next((o for o in result.observers if isinstance(o, ShapeObserver)), None)
    finally:
        bar.close()
    stats.merge(walked)
    reached = Progress(
        interrupted=Interruption(stats.slabs, len(pages)) if partial else None,
        incomplete=None if listed is None else incomplete_progress(listed, usages, stats),
    )
    with signals_noted() as late:
        report = _report(
            prog, cache, options, dump, usages, stats, tally, pages, found, reached, sample, started
        )
        if shapes is not None:
            size = max(u.object_size for u in usages)
            report = attribute_report(prog, report, shapes, size)
        if sites is not None:
            labels = tally.cluster_labels(report.clusters)
            report = replace(report, call_sites=call_site_report(prog, sites, labels))
            if report.shapes is not None:
                report = replace(report, shapes=shape_call_sites(prog, report.shapes, caches))
    # Signals noted while the report was put together are known only now.
    return replace(report, late_signals=(*stats.late_signals, *late))


def walked_every_slab(stats: WalkStats, progress: Progress, sample: SampleSpec | None) -> bool:
    """
    Whether the walk read every slab of the cache and knew which objects were
    free in each: then the objects it found are the allocated ones, exactly
    (what drgn's enumeration yields), and no counter is needed.
    """
    return (
        sample is None
        and progress.interrupted is None
        and progress.incomplete is None
        and stats.faults == 0
        and stats.corrupt_slabs == 0
        and stats.cpu_slabs_lost == 0
        and not stats.cpu_areas_unread
    )


def _report(
    prog: Program,
    cache: str,
    options: PassOptions,
    dump: Dump | None,
    usages: list[CacheUsage],
    stats: WalkStats,
    tally: FragmentTally,
    pages: SlabPages,
    found: SlabPages,
    progress: Progress,
    sample: SampleSpec | None,
    started: float,
) -> Report:
    """Sort, cluster and put together the report of a walk."""
    fragments = sort_fragments(tally.fragments.values())
    clusters = cluster_fragments(fragments, tally.templates, tally.known_masks())
    if options.per_slab:
        for cluster, spread in zip(clusters, tally.cluster_spreads(clusters), strict=True):
            cluster.slab_square, cluster.slab_cross = spread.square, spread.cross
    walked_all = walked_every_slab(stats, progress, sample)
    return Report(
        dump=_dump_facts(prog, dump),
        cache=CacheFacts(
            name=cache,
            caches=tuple(u.name for u in usages),
            object_size=max(u.object_size for u in usages),
            allocated=stats.objects_scanned if walked_all else sum(u.allocated for u in usages),
            total=sum(u.total for u in usages),
            slabs=sum(u.slabs for u in usages),
            allocated_from="walk" if walked_all else "lists",
            allocated_exact=walked_all or all(u.exact for u in usages),
        ),
        scan=ScanFacts(
            objects_scanned=stats.objects_scanned,
            slabs=stats.slabs,
            context_before=options.before,
            context_after=options.after,
            min_length=options.min_length,
            pointers_masked=options.mask_pointers,
            pointer_runs=tally.pointer_runs,
            seconds=round(time.monotonic() - started, 3),
            faults=stats.faults,
            fault_addresses=tuple(stats.fault_slabs),
            corrupt_slabs=stats.corrupt_slabs,
            corrupt_slab_addresses=tuple(stats.corrupt_slab_addresses),
            cpu_freelist_errors=tuple(stats.cpu_errors),
            exact=tally.exact,
            complete=tally.complete,
            max_fragments=options.max_fragments,
            dropped_fragments=tally.dropped_fragments,
            folded_fragments=tally.folded_fragments,
            folded_templates=len(tally.templates),
            error_bound=tally.error_bound,
        ),
        fragments=fragments,
        clusters=clusters,
        progress=progress,
        sample=None
        if sample is None
        else SampleFacts(
            fraction=sample.fraction,
            objects=sample.objects,
            seed=sample.seed,
            slabs_sampled=len(pages),
            slabs_total=len(found),
            objects_sampled=stats.objects_scanned,
            slabs_read=tally.slabs_seen,
            slab_objects_square=tally.slab_objects_square,
            population=sum(u.allocated for u in usages),
        ),
    )


def attribute_report(
    prog: Program, report: Report, observer: ShapeObserver, object_size: int
) -> Report:
    """
    *report* with its top clusters attributed (objects of *object_size*
    bytes) and the shape groups of *observer* (the string-less objects of
    the same walk), with the seconds this took.
    """
    started = time.monotonic()
    namer = WordNamer(prog, KernelRanges.read(prog))
    clusters = attribute_clusters(namer, report.clusters, object_size)
    shapes = summarise_shapes(observer, namer)
    return replace(
        report,
        attribution=tuple(clusters),
        shapes=shapes,
        attribution_seconds=round(time.monotonic() - started, 3),
    )


def attach_example_bytes(report: Report, prog: Program, clusters: int = HTML_EXAMPLES) -> Report:
    """
    *report* with the first example object of its top *clusters* clusters
    read from *prog* (at most :data:`HTML_OBJECT_BYTES` each) into
    ``example_bytes``, for the HTML report's ``rd -a``-style dumps.
    Unreadable ones are left out.
    """
    size = min(report.cache.object_size, HTML_OBJECT_BYTES)
    found = dict(report.example_bytes)
    for cluster in report.clusters[:clusters]:
        if not cluster.examples or size <= 0:
            continue
        address = cluster.examples[0]
        with contextlib.suppress(FaultError, ValueError):
            found[address] = prog.read(address, size)
    return replace(report, example_bytes=found)
