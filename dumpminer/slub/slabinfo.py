"""
The caches listing: ``dumpminer caches``, like /proc/slabinfo or crash's
``kmem -s``, sorted by memory so the leaking cache comes first.

Counts come from drgn's :func:`~drgn.helpers.linux.slab.slab_cache_usage`,
merged caches from :func:`~drgn.helpers.linux.slab.get_slab_cache_aliases`,
and the kernel's own total (the ``Slab:`` line of /proc/meminfo) from
:func:`~drgn.helpers.linux.slab.slab_total_usage`, to check the sum against.
The two differ by design: the kernel's counters also hold ``kmalloc()``
allocations too large for any cache (whole pages from the page allocator) and
leave out per-CPU deltas not yet folded in; docs/triage.md explains, and
tests/test_triage.py checks it page by page on the real samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drgn import Program
from drgn.helpers.linux.slab import for_each_slab_cache, get_slab_cache_aliases, slab_total_usage

from dumpminer.errors import KernelDataError
from dumpminer.slub.caches import CacheUsage, cache_usage


@dataclass(frozen=True)
class CacheLine:
    """One cache with its memory and the names merged into it."""

    usage: CacheUsage
    aliases: tuple[str, ...]
    #: Share of all slab memory counted here.
    share: float


@dataclass(frozen=True)
class SlabInfo:
    """Every slab cache of a dump, most memory first."""

    caches: list[CacheLine]
    #: Sum of the caches' slab memory.
    memory: int
    #: The kernel's NR_SLAB_RECLAIMABLE_B + NR_SLAB_UNRECLAIMABLE_B, in bytes: the
    #: ``Slab:`` line of /proc/meminfo, which also counts large ``kmalloc()``.
    kernel_slab_memory: int
    #: Caches whose counts could not be read: (address, why). A corrupt
    #: cache is listed here instead of ending the listing of the others.
    unreadable: list[tuple[int, str]] = field(default_factory=list)


def slab_info(prog: Program) -> SlabInfo:
    """Count every cache in *prog* and sort by memory, descending."""
    usages = []
    unreadable = []
    for cache in for_each_slab_cache(prog):
        try:
            usages.append(cache_usage(cache))
        except KernelDataError as e:
            unreadable.append((cache.value_(), str(e)))
    merged: dict[str, list[str]] = {}
    try:
        aliases = get_slab_cache_aliases(prog)
    except (LookupError, ValueError):  # Needs CONFIG_SLUB and CONFIG_SYSFS.
        aliases = {}
    for alias, target in aliases.items():
        merged.setdefault(target, []).append(alias)
    memory = sum(u.memory for u in usages)
    usages.sort(key=lambda u: (-u.memory, u.name, u.address))
    lines = [
        CacheLine(u, tuple(sorted(merged.get(u.name, ()))), u.memory / memory if memory else 0.0)
        for u in usages
    ]
    total = slab_total_usage(prog)
    page_size = prog["PAGE_SIZE"].value_()
    kernel = (total.reclaimable_pages + total.unreclaimable_pages) * page_size
    return SlabInfo(lines, memory, kernel, unreadable)


