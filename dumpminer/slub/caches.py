"""
Slab caches by name: finding the ones a user means, and listing them all.

Users name caches as /proc/slabinfo does (``kmalloc-32``), as older kernels
did (``size-32``, the SLAB allocator's name in the story), or with a glob
(``kmalloc-*32`` also takes ``kmalloc-cg-32`` and ``kmalloc-rnd-05-32``).
Names and layouts come from drgn's slab helpers; the counts from the cache's
lists, as crash counts them (:mod:`dumpminer.allocator`).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass

from drgn import FaultError, Object, Program
from drgn.helpers.linux.slab import (
    get_slab_cache_aliases,
    slab_cache_objects_per_slab,
    slab_cache_pages_per_slab,
)

from dumpminer.errors import KernelDataError, UnknownCacheError

#: The SLAB allocator's general caches were ``size-N``; SLUB calls them
#: ``kmalloc-N``. ``size-32(DMA)`` became ``dma-kmalloc-32``.
_OLD_KMALLOC_NAME = re.compile(r"size-([\d*?\[\]]+)(\(DMA\))?")


def cache_name(cache: Object) -> str:
    """The name of a ``struct kmem_cache *``, as /proc/slabinfo prints it."""
    return os.fsdecode(cache.name.string_())


def modern_name(name: str) -> str:
    """Translate the story's ``size-32`` (or ``size-*``) to today's ``kmalloc-32``."""
    match = _OLD_KMALLOC_NAME.fullmatch(name)
    if not match:
        return name
    return ("dma-kmalloc-" if match.group(2) else "kmalloc-") + match.group(1)


def readable_caches(prog: Program) -> dict[str, Object]:
    """
    Every slab cache whose name can be read, by name. A dump cut short can
    lose the memory of some names (allocated late, high in memory): those
    caches cannot be asked for by name, and are left out here.
    """
    caches: dict[str, Object] = {}
    unnamed: list[int] = []
    for cache in slab_caches_reached(prog):
        try:
            caches[cache_name(cache)] = cache
        except FaultError:
            unnamed.append(cache.value_())
    prog.cache["dumpminer_unnamed_caches"] = unnamed
    return caches


def slab_caches_reached(prog: Program) -> list[Object]:
    """
    The caches on ``slab_caches``, in list order, as drgn's
    :func:`for_each_slab_cache` gives them when the list is whole. When a link
    faults (a ``struct kmem_cache`` in memory the dump lacks), the list is also
    followed backwards from its head up to the break: every cache but those
    past an unreadable one. Raises FaultError when the head is unreadable.
    (New caches go to the list's front: a dump cut short loses them first.)
    """
    from drgn import container_of

    head = prog["slab_caches"].address_of_()
    first, last = head.next.read_(), head.prev.read_()
    forward: list[Object] = []
    seen: set[int] = set()
    try:
        pos = first
        while pos != head:
            seen.add(pos.value_())
            forward.append(container_of(pos, "struct kmem_cache", "list"))
            pos = pos.next.read_()
        return forward
    except FaultError:
        pass
    backward: list[Object] = []
    try:
        pos = last
        while pos != head and pos.value_() not in seen:
            seen.add(pos.value_())
            backward.append(container_of(pos, "struct kmem_cache", "list"))
            pos = pos.prev.read_()
    except FaultError:
        pass
    return forward + backward[::-1]


#: A kmalloc cache's size at the end of its name: ``kmalloc-1024``, ``kmalloc-cg-1k``.
_KMALLOC_SIZE = re.compile(r"(.*kmalloc-(?:[a-z0-9]+-)*?)(\d+)(k?)")


def kmalloc_spellings(name: str) -> list[str]:
    """
    *name* and its other spelling of a kmalloc size: the kernel names the
    caches of whole KiB ``kmalloc-1k``, ``kmalloc-2k``, ... where crash's
    ``size-1024`` (and older kernels) say ``kmalloc-1024``; both are meant.
    """
    match = _KMALLOC_SIZE.fullmatch(name)
    if not match:
        return [name]
    prefix, number, kib = match.group(1), int(match.group(2)), match.group(3)
    if kib:
        return [name, f"{prefix}{number * 1024}"]
    if number >= 1024 and number % 1024 == 0:
        return [name, f"{prefix}{number // 1024}k"]
    return [name]


def resolve_caches(prog: Program, name: str) -> list[Object]:
    """
    Find the caches *name* means: an exact name, an old ``size-N`` name, a
    merged cache's alias (drgn's :func:`get_slab_cache_aliases`), or a glob.
    Raises :class:`UnknownCacheError` with the closest names (whatever their
    case) when none match.
    """
    caches = readable_caches(prog)
    wanted = modern_name(name)
    spellings = kmalloc_spellings(wanted)
    for spelling in spellings:
        if spelling in caches:
            return [caches[spelling]]
    try:
        aliases = get_slab_cache_aliases(prog)
    except (LookupError, ValueError, FaultError):  # CONFIG_SLUB, CONFIG_SYSFS; a cut dump
        aliases = {}
    for spelling in spellings:
        if spelling in aliases and aliases[spelling] in caches:
            return [caches[aliases[spelling]]]
    if any(c in wanted for c in "*?["):
        matched = sorted(n for n in caches if fnmatch.fnmatchcase(n, wanted))
        if matched:
            return [caches[n] for n in matched]
    import difflib  # only a name that is not found needs it

    # Suggestions ignore case: KMALLOC-32 and Kmalloc-32 mean kmalloc-32.
    lowered: dict[str, str] = {}
    for known in [*caches, *aliases]:
        lowered.setdefault(known.lower(), known)
    near = difflib.get_close_matches(modern_name(name.lower()), list(lowered), n=5, cutoff=0.6)
    close = [lowered[n] for n in near]
    hint = f"; closest: {', '.join(close)}" if close else ""
    unnamed = prog.cache.get("dumpminer_unnamed_caches", [])
    if unnamed:
        raise KernelDataError(
            f"no readable slab cache named {name!r}: the dump lacks the names of "
            f"{len(unnamed)} caches (a dump cut short?), and it may be one of them{hint}"
        )
    raise UnknownCacheError(f"no slab cache named {name!r} in this dump{hint}")


@dataclass(frozen=True)
class CacheUsage:
    """One cache's line of ``kmem -s`` / /proc/slabinfo."""

    name: str
    address: int
    object_size: int
    #: Bytes from one object to the next (object, metadata and padding).
    stride: int
    objects_per_slab: int
    pages_per_slab: int
    slabs: int
    allocated: int
    total: int
    page_size: int
    #: False when ``allocated`` is not exact: the cache's lists or counters could
    #: not be read whole (a dump cut short, a CPU's list broken), see :func:`cache_usage`.
    exact: bool = True
    #: Why ``allocated`` is not exact.
    inexact_why: str | None = None

    @property
    def memory(self) -> int:
        """Bytes of slab pages the cache holds."""
        return self.slabs * self.pages_per_slab * self.page_size


def cache_usage(cache: Object, page_array_lost: bool = False) -> CacheUsage:
    """
    Counts of one cache, as crash's ``kmem -s`` makes them (see
    :meth:`~dumpminer.allocator.SlubAllocator.list_count`): the per-node
    counters' objects less the free objects every CPU and node list shows.
    Not drgn's :func:`slab_cache_usage`, which misses what other CPUs freed
    into a CPU's active slab. A list that loops, leaves its cache or faults
    (a CPU stopped mid-update, a dump cut short: *page_array_lost*) does not
    stop the count: ``allocated`` is then not exact, and says why.
    """
    from dumpminer.slub.allocator import slab_allocator

    del page_array_lost  # every list is read up to its break, lost or not
    try:
        count = slab_allocator(cache.prog_).list_count(cache)
    except (FaultError, ValueError) as e:
        raise KernelDataError(f"cannot count slab cache at {cache.value_():#x}: {e}") from e
    return _usage(cache, count.slabs, count.total, count.free, list(count.errors))


def _usage(
    cache: Object, slabs: int, total: int, free: int, errors: list[str] | None = None
) -> CacheUsage:
    """The :class:`CacheUsage` of *cache* from its slab and object counts."""
    return CacheUsage(
        name=cache_name(cache),
        address=cache.value_(),
        object_size=cache.object_size.value_(),
        stride=cache.size.value_(),
        objects_per_slab=slab_cache_objects_per_slab(cache),
        pages_per_slab=slab_cache_pages_per_slab(cache),
        slabs=slabs,
        allocated=total - free,
        total=total,
        page_size=cache.prog_["PAGE_SIZE"].value_(),
        exact=not errors,
        inexact_why="; ".join(errors or ()) or None,
    )


