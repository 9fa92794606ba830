"""
KFENCE objects: slab objects that live alone in a page of the KFENCE pool.

KFENCE (``CONFIG_KFENCE``, Linux 5.12, commit 0ce20dd84089 "mm: add Kernel
Electric-Fence infrastructure") serves one slab allocation in so many from its
own pool, ``__kfence_pool``: ``(CONFIG_KFENCE_NUM_OBJECTS + 1) * 2`` pages,
where the first two pages are guards and object *i* has page ``(i + 1) * 2``
to itself, each followed by a guard page. Those pages are marked slab pages and
their ``struct slab`` names the cache (``slab_cache``) and one object
(``objects = 1``), so a walk of the page array finds them with the cache's
other slabs. But the object does not sit at the start of its page:
``kfence_guarded_alloc()`` places it at the start or, one time in two, at the
end, ``ALIGN_DOWN(page + PAGE_SIZE - size, cache->align)``; and when it is
freed, nothing in the page says so (the slab keeps its cache, and its freelist
stays empty). Where the object is, and whether it is allocated, is in its
``struct kfence_metadata``: ``addr``, ``size``, ``cache`` and ``state``
(``KFENCE_OBJECT_ALLOCATED`` when allocated).

``kfence_metadata`` was a static array until Linux 6.6 ("mm: kfence: allocate
kfence_metadata at runtime"), then a pointer to an array allocated at boot,
whose length (``CONFIG_KFENCE_NUM_OBJECTS``, a macro) no symbol gives: the
array is read up to the first entry whose ``addr`` is not in its own page,
which ``kfence_init_pool()`` sets for every entry, used or not. Debian's
cloud kernels have no KFENCE; its generic 6.12 kernel has it, off unless
booted with ``kfence.sample_interval``.
"""

from __future__ import annotations

from dataclasses import dataclass

from drgn import FaultError, Object, Program

__all__ = [
    "KfenceObject",
    "KfencePool",
    "allocated_in",
    "kfence_pool",
    "metadata_index",
    "placement_ok",
]

#: Most KFENCE objects a kernel can have (CONFIG_KFENCE_NUM_OBJECTS's range).
MAX_OBJECTS = 65535


@dataclass(frozen=True)
class KfenceObject:
    """One KFENCE object, from its ``struct kfence_metadata``."""

    #: The object's address (``meta->addr``): in its page, at either end.
    address: int
    #: Bytes asked for (``meta->size``).
    size: int
    #: The ``struct kmem_cache *`` it came from (``meta->cache``).
    cache: int
    #: ``meta->state == KFENCE_OBJECT_ALLOCATED``.
    allocated: bool


@dataclass(frozen=True)
class KfencePool:
    """The KFENCE pool of a dump: where it is and its objects, by page."""

    start: int
    size: int
    page_size: int
    #: Object page address -> its object; pages whose metadata could not be
    #: read or is not consistent with the placement rule are missing.
    objects: dict[int, KfenceObject]
    #: Object pages whose metadata is unreadable or inconsistent.
    bad_pages: tuple[int, ...] = ()

    def contains(self, address: int) -> bool:
        """Whether *address* lies in the pool."""
        return self.start <= address < self.start + self.size


def metadata_index(pool_start: int, page_size: int, address: int, objects: int) -> int | None:
    """
    The index in ``kfence_metadata`` of the object whose page holds *address*,
    as the kernel's ``addr_to_metadata()`` computes it: ``(address - pool) /
    (2 * PAGE_SIZE) - 1``; None for the two leading guard pages and past the
    last object.
    """
    index = (address - pool_start) // (2 * page_size) - 1
    return index if 0 <= index < objects else None


def placement_ok(page: int, page_size: int, address: int, size: int, align: int) -> bool:
    """
    Whether a KFENCE object of *size* bytes at *address* is where
    ``kfence_guarded_alloc()`` can put it in its *page*: at the start, or at
    ``ALIGN_DOWN(page + PAGE_SIZE - size, align)`` (the right end).
    """
    if not 0 < size <= page_size or align <= 0:
        return False
    right = (page + page_size - size) // align * align
    return address in (page, right)


def kfence_pool(prog: Program) -> KfencePool | None:
    """
    The KFENCE pool of *prog* and its objects, read once and kept in
    ``prog.cache``; None when the kernel has no KFENCE or never set up its
    pool (``kfence.sample_interval=0`` at boot).
    """
    try:
        found: KfencePool | None = prog.cache["dumpminer_kfence"]
        return found
    except KeyError:
        pass
    pool = _read_pool(prog)
    prog.cache["dumpminer_kfence"] = pool
    return pool


def allocated_in(pool: KfencePool | None, cache: int) -> int:
    """KFENCE objects of the ``struct kmem_cache`` at *cache* that are allocated."""
    if pool is None:
        return 0
    return sum(1 for obj in pool.objects.values() if obj.allocated and obj.cache == cache)


def _read_pool(prog: Program) -> KfencePool | None:
    """:func:`kfence_pool`, read."""
    try:
        start = prog["__kfence_pool"].value_()
        metadata = prog["kfence_metadata"]
    except (KeyError, LookupError, FaultError):
        return None
    if not start:
        return None
    page_size = int(prog["PAGE_SIZE"].value_())
    if metadata.type_.kind.name == "POINTER":
        if not metadata.value_():
            return None
        first = metadata.read_()
        length = None
    else:
        first = metadata[0].address_of_()
        length = metadata.type_.length
    unused = prog.constant("KFENCE_OBJECT_UNUSED").value_()
    allocated_state = prog.constant("KFENCE_OBJECT_ALLOCATED").value_()
    objects: dict[int, KfenceObject] = {}
    bad: list[int] = []
    index = 0
    while index < (length if length is not None else MAX_OBJECTS):
        page = start + (index + 1) * 2 * page_size
        try:
            meta = first[index].read_()
            obj = _object(meta, allocated_state)
            state = meta.state.value_()
        except FaultError:
            if length is None:
                break
            bad.append(page)
            index += 1
            continue
        if state == unused:
            # kfence_init_pool() sets every entry's addr to its page: past the
            # end of an array of unknown length (6.6 on), that no longer holds.
            if length is None and obj.address != page:
                break
        elif placement_ok(page, page_size, obj.address, obj.size, _align(meta)):
            objects[page] = obj
        elif length is None and not page <= obj.address < page + page_size:
            break
        else:
            bad.append(page)
        index += 1
    return KfencePool(start, (index + 1) * 2 * page_size, page_size, objects, tuple(bad))


def _object(meta: Object, allocated_state: int) -> KfenceObject:
    """A :class:`KfenceObject` from a read ``struct kfence_metadata``."""
    return KfenceObject(
        address=meta.addr.value_(),
        size=meta.size.value_(),
        cache=meta.cache.value_(),
        allocated=meta.state.value_() == allocated_state,
    )


def _align(meta: Object) -> int:
    """``cache->align`` of the object's cache (1 when unreadable: any address fits)."""
    try:
        return int(meta.cache.align.value_()) or 1
    except FaultError:
        return 1
