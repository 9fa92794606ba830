"""
The slab allocator, as far as dumpminer reaches past drgn's public helpers.

dumpminer reads SLUB only. Most of what it needs is public in
:mod:`drgn.helpers.linux.slab`; what is not (which objects sit free on
per-CPU freelists, in per-CPU sheaves and in the barn's full sheaves) is
drgn's private per-allocator helper class, which follows every kernel's
layout. This module is the one place that touches those internals, behind
:class:`SlubAllocator`, picked once per program by :func:`slab_allocator`.

.. warning::

    drgn's private names can change in any release; pyproject.toml pins drgn
    to the versions tested. Nothing here is imported until a walk needs it, so
    ``dumpminer info`` (headers only) and even ``caches`` work whatever drgn
    holds. An allocator or a drgn this module does not know ends the run with
    :class:`~dumpminer.errors.UnsupportedKernelError`, one line, never an
    ``AttributeError``.

.. warning::

    Kernels built with ``CONFIG_SLAB`` (the other allocator, removed in 6.8)
    and ``CONFIG_SLOB`` (removed in 6.4) lay slabs out differently: their
    freelists are index arrays, not pointers in the objects, and the walker
    would count free objects as allocated. They are refused, not guessed at.

The list walks (:meth:`SlubAllocator.listed_slabs`) are what crash's
``kmem -S`` follows: they reach slabs without the page array, for a dump that
lost it (a copy cut short keeps low memory, and QEMU and kdump put the page
array at the top).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from drgn import FaultError, Object, Program, sizeof
from drgn.helpers import ValidationError

from dumpminer.errors import KernelDataError, UnsupportedKernelError
from dumpminer.slub.flags import slab_flag

__all__ = [
    "CpuSlabs",
    "ListCount",
    "ListedSlabs",
    "PerCpu",
    "SlubAllocator",
    "page_array_lost",
    "slab_allocator",
    "vmemmap",
]

#: The private methods of drgn's ``_SlabCacheHelperSlub`` that this module
#: calls: all are probed at once, so a drgn that lacks one is a clear error
#: (:class:`~dumpminer.errors.UnsupportedKernelError`, exit 12), never an
#: AttributeError in the middle of a walk.
DRGN_HELPER_METHODS = ("_per_cpu_info", "_for_each_per_node", "_sheaves_full_objects")
#: The drgn release whose private slab helpers this module was tested with
#: (pyproject.toml pins it).
TESTED_DRGN = "0.3.0"
#: Most slabs followed on one list: a corrupt list must not loop forever.
MAX_LIST_SLABS = 1 << 24


@dataclass(frozen=True)
class ListedSlabs:
    """
    The ``struct slab`` addresses of one cache that its own lists name.

    :ivar cpu: Per-CPU active slabs and per-CPU partial slabs.
    :ivar partial: Slabs on the per-node partial lists.
    :ivar full: Slabs on the per-node full lists: kept only with
        ``CONFIG_SLUB_DEBUG`` and ``slub_debug=U`` for the cache, else empty.
    :ivar full_tracked: Whether the cache keeps its full slabs on a list.
    :ivar errors: Lists that ended at a fault or a corrupt entry.
    """

    cpu: frozenset[int]
    partial: frozenset[int]
    full: frozenset[int]
    full_tracked: bool
    errors: tuple[str, ...]

    @property
    def all(self) -> frozenset[int]:
        """Every slab the lists name."""
        return self.cpu | self.partial | self.full


@dataclass(frozen=True)
class CpuSlabs:
    """
    What one CPU holds of a cache in its ``struct kmem_cache_cpu`` (before
    7.0), read CPU by CPU so that one CPU's broken state costs only that CPU.

    :ivar cpu: The CPU.
    :ivar active: Its active slab (``struct slab`` or, before 5.17,
        ``struct page`` address), 0 when it has none or it is unknown.
    :ivar active_free: ``objects - inuse`` of the active slab: the objects
        other CPUs freed into it (they sit on the slab's own freelist).
    :ivar freelist: Objects free on its lockless freelist, as far as read.
    :ivar partial_free: Free objects on its partial slabs, as far as read.
    :ivar partial: Its partial slabs, as far as read.
    :ivar damage: What is broken (the per-CPU area, the freelist, the
        partial list) and what it costs, or None.
    :ivar lost_active: Whether the free objects of the active slab are
        unknown (a broken freelist): the walk then leaves that slab out.
    :ivar count_exact: Whether ``active_free + len(freelist) +
        partial_free`` is all this CPU holds free.
    """

    cpu: int
    active: int
    active_free: int
    freelist: frozenset[int]
    partial_free: int
    partial: tuple[int, ...] = ()
    damage: str | None = None
    lost_active: bool = False
    count_exact: bool = True
    #: The per-CPU area itself is unreadable (a dump cut short).
    area_unread: bool = False


@dataclass(frozen=True)
class PerCpu:
    """Every CPU's :class:`CpuSlabs` of one cache, and the sheaves' free objects."""

    cpus: tuple[CpuSlabs, ...]
    #: Objects free in per-CPU sheaves and the barn (6.18 on), and, for kernels
    #: read through drgn's helper, on the per-CPU freelists.
    other_free: frozenset[int] = frozenset()
    #: Errors of what drgn's helper read (sheaves; kernels without cpu_slab).
    other_error: str | None = None

    @property
    def free_objects(self) -> set[int]:
        """Objects free on every readable per-CPU freelist and sheaf."""
        free = set(self.other_free)
        for cpu in self.cpus:
            free |= cpu.freelist
        return free

    @property
    def unread_cpus(self) -> tuple[int, ...]:
        """CPUs whose per-CPU area is unreadable: their free objects are unknown."""
        return tuple(c.cpu for c in self.cpus if c.area_unread)

    @property
    def held_slabs(self) -> frozenset[int]:
        """Active and partial slabs of the readable CPUs."""
        held: set[int] = set()
        for cpu in self.cpus:
            held.update(cpu.partial)
            if cpu.active:
                held.add(cpu.active)
        return frozenset(held)

    @property
    def lost_slabs(self) -> frozenset[int]:
        """Active slabs whose free objects are unknown: left out of the walk."""
        return frozenset(c.active for c in self.cpus if c.lost_active and c.active)

    @property
    def errors(self) -> list[str]:
        """One line per broken CPU (and for the sheaves), naming what was lost."""
        lines = [f"cpu {c.cpu}: {c.damage}" for c in self.cpus if c.damage]
        if self.other_error:
            lines.append(self.other_error)
        return lines


@dataclass(frozen=True)
class ListCount:
    """
    A cache's objects counted as crash's ``kmem -s`` counts them: the
    per-node counters' objects, less the free objects the lists show.
    """

    slabs: int
    total: int
    free: int
    #: What could not be read; ``total - free`` is then not exact.
    errors: tuple[str, ...]


class SlubAllocator:
    """
    SLUB as drgn's private helper reads it. One instance serves a program;
    get it with :func:`slab_allocator`.
    """

    def __init__(self, prog: Program, helper_factory: Any) -> None:
        self.prog = prog
        self._helper_factory = helper_factory
        # Before Linux kernel commit d122019bf061 ("mm: Split slab into its own
        # type") (in v5.17), the slab fields were in struct page.
        self._slab_type = "struct slab" if _has_type(prog, "struct slab") else "struct page"

    def _helper(self, cache: Object) -> Any:
        """drgn's per-cache helper: private to drgn, so untyped here."""
        return self._helper_factory(cache)

    def cpu_free_objects(self, cache: Object) -> tuple[set[int], str | None]:
        """
        Objects of *cache* free on the per-CPU freelists (and, since 6.18, in
        sheaves). A corrupt per-CPU freelist (a double free often makes one)
        does not stop the walk: what could be read is returned, with the error.
        """
        helper = self._helper(cache)
        info = helper._per_cpu_info(catch_errors=True)
        free: set[int] = set(info.free_objects)
        error = None if info.error is None else str(info.error)
        try:
            free |= helper._sheaves_full_objects()
        except (FaultError, ValidationError) as e:
            error = str(e)
        return free, error

    def per_cpu(self, cache: Object) -> PerCpu:
        """
        What every CPU holds of *cache*, CPU by CPU: its active slab, its
        lockless freelist and its partial list. A panic can stop a CPU in the
        middle of a slab operation, and a dump cut short loses the per-CPU
        areas (at the top of memory) first: a CPU whose state is broken or
        unreadable is named in its :attr:`CpuSlabs.damage`, and the other
        CPUs are read as if nothing happened.

        Kernels with per-CPU sheaves (6.18 on) or without ``cpu_slab`` (7.0)
        are read through drgn's helper, which stops at the first error.
        """
        try:
            cpu_slab = cache.cpu_slab.read_()
        except AttributeError:
            cpu_slab = None
        if cpu_slab is None or _has_member(cache, "cpu_sheaves"):
            free, error = self.cpu_free_objects(cache)
            return PerCpu((), frozenset(free), error)
        if not cpu_slab:
            return PerCpu(())
        from drgn.helpers.linux.cpumask import for_each_possible_cpu

        return PerCpu(tuple(self._cpu_slabs_of(cache, cpu_slab, cpu)
                            for cpu in for_each_possible_cpu(self.prog)))

    def _cpu_slabs_of(self, cache: Object, cpu_slab: Object, cpu: int) -> CpuSlabs:
        """One CPU's :class:`CpuSlabs` of *cache*; never raises for its data."""
        from drgn.helpers.linux.percpu import per_cpu_ptr

        try:
            this = per_cpu_ptr(cpu_slab, cpu)[0].read_()
        except FaultError as e:
            return CpuSlabs(
                cpu, 0, 0, frozenset(), 0, count_exact=False, area_unread=True,
                damage=f"per-CPU area unreadable ({e}): its active slab, lockless freelist "
                "and partial list are unknown, and so are the free objects they hold",
            )
        member = "slab" if _has_member(this, "slab") else "page"
        active = this.member_(member)
        active_free = 0
        damage: list[str] = []
        lost_active = False
        exact = True
        freelist: frozenset[int] = frozenset()
        if active:
            try:
                objects, inuse, owner = self._slab_counts(active)
            except FaultError as e:
                # Its struct slab is lost (the page array, with a dump cut
                # short), not its objects: the freelist still says which are
                # free; only what other CPUs freed into it is unknown.
                from drgn.helpers.linux.slab import slab_cache_objects_per_slab

                objects, inuse, owner = slab_cache_objects_per_slab(cache), 0, cache.value_()
                exact = False
                damage.append(f"active slab {active.value_():#x} has no readable struct slab "
                              f"({e}): the objects other CPUs freed into it are not counted")
            if owner != cache.value_():
                broken: str | None = f"active slab {active.value_():#x} belongs to another cache"
            else:
                active_free = max(objects - inuse, 0)
                freelist, broken = self._cpu_freelist(cache, active, objects, this.freelist)
            if broken:
                lost_active, exact = True, False
                damage.append(
                    f"{broken}: its active slab {active.value_():#x} is left out of the walk "
                    f"(its allocated objects are lost; {len(freelist)} free objects were read)"
                )
        partial_free, partial, broken = self._cpu_partial(cache, this)
        if broken:
            exact = False
            damage.append(
                f"{broken}: the walk finds its slabs in the page array; only the count of "
                "free objects from the lists misses those past the break"
            )
        return CpuSlabs(
            cpu, active.value_(), active_free, freelist, partial_free, partial,
            damage="; ".join(damage) or None, lost_active=lost_active, count_exact=exact,
        )

    def _slab_counts(self, slab: Object) -> tuple[int, int, int]:
        """``(objects, inuse, slab_cache)`` of a ``struct slab`` (or page)."""
        slab = slab.read_()
        return slab.objects.value_(), slab.inuse.value_(), slab.slab_cache.value_()

    def _cpu_freelist(
        self, cache: Object, active: Object, objects: int, head: Object
    ) -> tuple[frozenset[int], str | None]:
        """
        The objects on a CPU's lockless freelist, which all lie in its active
        slab: a pointer outside it, a cycle, or a fault ends the list and is
        returned as the error, with what was read before it.
        """
        from drgn.helpers.linux.mm import pfn_to_virt

        helper = self._helper(cache)
        stride = cache.size.value_()
        try:
            pad = cache.red_left_pad.value_()
        except AttributeError:
            pad = 0
        # Not drgn's page_to_virt: its vmemmap lookup faults on a dump that lost
        # the memory sections (see vmemmap()).
        pfn = (active.value_() - vmemmap(self.prog)) // sizeof(self.prog.type("struct page"))
        base = pfn_to_virt(self.prog, pfn).value_() + pad
        end = base + objects * stride
        seen: set[int] = set()
        ptr = head.value_()
        while ptr:
            if not (base <= ptr < end and (ptr - base) % stride == 0):
                return frozenset(seen), (
                    f"freelist points outside its active slab ({ptr:#x}) after "
                    f"{len(seen)} objects"
                )
            if ptr in seen:
                return frozenset(seen), f"freelist loops after {len(seen)} objects"
            seen.add(ptr)
            try:
                ptr = helper._freelist_dereference(ptr + helper._freelist_offset)
            except FaultError as e:
                return frozenset(seen), f"freelist unreadable after {len(seen)} objects ({e})"
        return frozenset(seen), None

    def _cpu_partial(
        self, cache: Object, this: Object
    ) -> tuple[int, tuple[int, ...], str | None]:
        """
        Free objects on a CPU's partial slabs (``CONFIG_SLUB_CPU_PARTIAL``),
        the slabs, and what ended the list early: a cycle, a slab of another
        cache, a fault, or more slabs than any list holds.
        """
        if not _has_member(this, "partial"):
            return 0, (), None
        free = 0
        seen: list[int] = []
        error = None
        try:
            slab = this.partial.read_()
            while slab:
                address = slab.value_()
                if address in seen:
                    error = f"partial list loops after {len(seen)} slabs"
                    break
                if len(seen) >= MAX_LIST_SLABS:
                    error = f"partial list longer than {MAX_LIST_SLABS} slabs"
                    break
                objects, inuse, owner = self._slab_counts(slab)
                if owner != cache.value_():
                    error = (f"partial list reaches slab {address:#x} of another cache "
                             f"after {len(seen)} slabs")
                    break
                seen.append(address)
                free += max(objects - inuse, 0)
                slab = slab.next.read_()
        except FaultError as e:
            error = f"partial list unreadable after {len(seen)} slabs ({e})"
        return free, tuple(seen), error

    def frozen(self, slab: int) -> bool:
        """
        Whether the slab at *slab* is frozen: a CPU's active slab (and, before
        6.8, a slab on a CPU's partial list). False when unreadable or when
        the kernel has no such bit.
        """
        try:
            return bool(Object(self.prog, self._slab_type, address=slab).frozen.value_())
        except (FaultError, AttributeError, LookupError):
            return False

    def list_count(self, cache: Object) -> ListCount:
        """
        *cache*'s slabs, objects and free objects as crash's ``kmem -s``
        counts them (crash's memory.c, ``get_kmem_cache_slub_data``): the
        per-node counters' objects, less, for every CPU, its active slab's
        ``objects - inuse`` (what other CPUs freed into it), its lockless
        freelist and its partial slabs' free objects, and each node's partial
        slabs' free objects. drgn's ``slab_cache_usage`` leaves out the first
        term and so overcounts on a machine of many CPUs. What cannot be read
        is named in ``errors``, and the count is then not exact.

        :raises ValueError: without ``CONFIG_SLUB_DEBUG`` (no counters).
        """
        label = cache_label(cache)
        errors: list[str] = []
        slabs = objects = 0
        for index, node in enumerate(self._nodes(cache)):
            try:
                slabs += node.nr_slabs.counter.value_()
                objects += node.total_objects.counter.value_()
            except AttributeError:
                raise ValueError("the kernel has no slab counters (CONFIG_SLUB_DEBUG)") from None
            except FaultError as e:
                errors.append(f"{label} node {index} unreadable ({e}): its slabs are not counted")
        per_cpu = self.per_cpu(cache)
        errors += [f"{label} {line}" for line in per_cpu.errors]
        free = len(per_cpu.other_free)
        for cpu in per_cpu.cpus:
            free += cpu.active_free + len(cpu.freelist) + cpu.partial_free
        for index, node in enumerate(self._nodes(cache)):
            free += self._node_partial_free(node, f"{label} node {index} partial", errors)
        # KFENCE objects are in no counter: their pages come from KFENCE's pool.
        from dumpminer.slub.kfence import allocated_in, kfence_pool

        objects += allocated_in(kfence_pool(self.prog), cache.value_())
        return ListCount(slabs, objects, free, tuple(errors))

    def _node_partial_free(self, node: Object, what: str, errors: list[str]) -> int:
        """Free objects on *node*'s partial slabs, up to a fault or a broken link."""
        from drgn.helpers.linux.list import validate_list_for_each_entry

        member = "slab_list" if _has_member_type(self.prog, self._slab_type, "slab_list") else "lru"
        free = 0
        try:
            head = node.partial.address_of_()
            for count, slab in enumerate(
                validate_list_for_each_entry(self._slab_type, head, member)
            ):
                if count >= MAX_LIST_SLABS:
                    errors.append(f"{what}: more than {MAX_LIST_SLABS} slabs")
                    break
                free += max(slab.objects.value_() - slab.inuse.value_(), 0)
        except (FaultError, ValidationError) as e:
            errors.append(f"{what}: {e}")
        return free

    def counters(self, cache: Object) -> tuple[int, int]:
        """
        ``(slabs, objects)`` of *cache* from the per-node counters
        (``nr_slabs``, ``total_objects``, kept with ``CONFIG_SLUB_DEBUG``):
        plain numbers in ``struct kmem_cache_node``, readable when the lists
        of slabs are not.

        :raises ValueError: without ``CONFIG_SLUB_DEBUG``.
        """
        slabs = objects = 0
        for node in self._nodes(cache):
            try:
                slabs += node.nr_slabs.counter.value_()
                objects += node.total_objects.counter.value_()
            except AttributeError:
                raise ValueError("the kernel has no slab counters (CONFIG_SLUB_DEBUG)") from None
        return slabs, objects

    def listed_slabs(self, cache: Object) -> ListedSlabs:
        """
        The slabs of *cache* its lists name, as crash's ``kmem -S`` shows
        them: each per-CPU active slab and per-CPU partial list, and each
        node's partial and (when tracked) full list. A list that faults or
        loops ends there, and says so in ``errors``.
        """
        errors: list[str] = []
        cpu = set(self._cpu_slabs(cache, errors))
        partial: set[int] = set()
        full: set[int] = set()
        tracked = False
        for index, node in enumerate(self._nodes(cache)):
            partial.update(self._node_list(node, "partial", f"node {index} partial", errors))
            if _has_member(node, "full"):
                store_user = slab_flag(self.prog, "SLAB_STORE_USER")
                tracked = tracked or bool(cache.flags.value_() & store_user)
                full.update(self._node_list(node, "full", f"node {index} full", errors))
        return ListedSlabs(
            frozenset(cpu), frozenset(partial), frozenset(full), tracked, tuple(errors)
        )

    def _nodes(self, cache: Object) -> list[Object]:
        """The cache's ``struct kmem_cache_node`` of each possible node."""
        try:
            nodes = cache.node
        except AttributeError:  # 7.1: behind per_node pointers
            return [p.node.read_() for p in self._helper(cache)._for_each_per_node()]
        return [n for n in (nodes[i].read_() for i in range(_nr_node_ids(self.prog))) if n]

    def _cpu_slabs(self, cache: Object, errors: list[str]) -> Iterator[int]:
        """Active and per-CPU partial slabs of every CPU (before 7.0)."""
        from drgn.helpers.linux.cpumask import for_each_possible_cpu
        from drgn.helpers.linux.percpu import per_cpu_ptr

        try:
            cpu_slab = cache.cpu_slab.read_()
        except AttributeError:
            return
        if not cpu_slab:
            return
        # Since Linux kernel commit bb192ed9aa71 ("mm/slub: Convert most struct
        # page to struct slab by spatch") (in v5.17), a CPU's active slab is
        # `struct slab *slab`; before, `struct page *page` (5.10 here).
        member = "slab" if _has_member(cpu_slab, "slab") else "page"
        for cpu in for_each_possible_cpu(self.prog):
            try:
                this = per_cpu_ptr(cpu_slab, cpu)
                active = this.member_(member).value_()
                if active:
                    yield active
                # Since Linux kernel commit a93cf07bc3fb ("mm/slub.c: wrap
                # cpu_slab->partial in CONFIG_SLUB_CPU_PARTIAL") (in v4.13), the
                # per-CPU partial list may not exist.
                partial = this.partial if _has_member(this, "partial") else None
                if partial is None:
                    continue
                slab = partial.read_()
                seen: set[int] = set()
                while slab:
                    if slab.value_() in seen or len(seen) >= MAX_LIST_SLABS:
                        errors.append(f"cpu {cpu} partial: loops after {len(seen)} slabs")
                        break
                    seen.add(slab.value_())
                    yield slab.value_()
                    slab = slab.next.read_()
            except FaultError as e:
                errors.append(f"cpu {cpu}: {e}")

    def cpu_active_slabs(self, cache: Object) -> list[tuple[int, int]]:
        """
        ``(struct slab address, per-CPU freelist head)`` of each CPU's active
        slab of *cache*, read from ``struct kmem_cache_cpu`` alone, without
        the ``struct slab`` (which lives in the page array): for a dump that
        lost the page array, the slab's objects can still be read through the
        direct map, and the CPU's freelist says which of them are free.
        CPUs whose data faults are left out.
        """
        from drgn.helpers.linux.cpumask import for_each_possible_cpu
        from drgn.helpers.linux.percpu import per_cpu_ptr

        try:
            cpu_slab = cache.cpu_slab.read_()
        except AttributeError:  # 7.0: sheaves only, no active slab per CPU
            return []
        if not cpu_slab:
            return []
        member = "slab" if _has_member(cpu_slab, "slab") else "page"
        out = []
        for cpu in for_each_possible_cpu(self.prog):
            with contextlib.suppress(FaultError):
                this = per_cpu_ptr(cpu_slab, cpu)
                active = this.member_(member).value_()
                if active:
                    out.append((active, this.freelist.value_()))
        return out

    def _node_list(self, node: Object, name: str, what: str, errors: list[str]) -> Iterator[int]:
        """The ``struct slab`` addresses on *node*'s list *name*."""
        from drgn.helpers.linux.list import validate_list_for_each_entry

        # Since Linux kernel commit 4da1984edbbe ("mm: combine LRU and main
        # union in struct page") (in v4.18) the list member is slab_list (SLUB
        # used it by that name from commit 916ac0527837, "slub: use slab_list
        # instead of lru", in v5.2; before, page::lru, the same word).
        member = "slab_list" if _has_member_type(self.prog, self._slab_type, "slab_list") else "lru"
        try:
            head = node.member_(name).address_of_()
            for count, slab in enumerate(
                validate_list_for_each_entry(self._slab_type, head, member)
            ):
                if count >= MAX_LIST_SLABS:
                    errors.append(f"{what}: more than {MAX_LIST_SLABS} slabs")
                    return
                yield slab.value_()
        except (FaultError, ValidationError) as e:
            errors.append(f"{what}: {e}")


def cache_label(cache: Object) -> str:
    """A cache's name for a message, or its address when the name is unreadable."""
    try:
        return str(cache.name.string_().decode(errors="replace"))
    except FaultError:
        return f"cache {cache.value_():#x}"


def slab_allocator(prog: Program) -> SlubAllocator:
    """
    The allocator of *prog*'s kernel, probed once and kept in ``prog.cache``.

    :raises UnsupportedKernelError: for a SLAB or SLOB kernel, or a drgn
        whose private slab helpers are not the ones this module knows.
    """
    with contextlib.suppress(KeyError):
        found: SlubAllocator = prog.cache["dumpminer_allocator"]
        return found
    _check_allocator(prog)
    allocator = SlubAllocator(prog, _drgn_helper_factory())
    prog.cache["dumpminer_allocator"] = allocator
    return allocator


def vmemmap(prog: Program) -> int:
    """
    The address of PFN 0's ``struct page`` in the virtual page array; from
    ``vmemmap_base`` (x86_64) when drgn's ``vmemmap``, which looks at the
    memory sections (allocated at the top of memory, lost first when a dump
    is cut short), faults.
    """
    try:
        return int(prog["vmemmap"].value_())
    except (FaultError, LookupError):
        pass
    try:
        return int(prog["vmemmap_base"].value_())
    except (FaultError, LookupError) as e:
        # A damaged VMCOREINFO can leave drgn without either: one line, exit 9.
        raise KernelDataError(f"the page array's address is unreadable: {e}") from e


def page_array_lost(prog: Program) -> bool:
    """
    Whether the dump lacks part of the page array: the ``struct page`` of
    its first or last PFN cannot be read. A dump cut short loses it first.
    """
    try:
        size = sizeof(prog.type("struct page"))
        first = vmemmap(prog)
        prog.read(first, size)
        prog.read(first + (prog["max_pfn"].value_() - 1) * size, size)
    except FaultError:
        return True
    return False


def _check_allocator(prog: Program) -> None:
    """Refuse kernels whose slabs are not SLUB's, naming which they are."""
    if _has_type(prog, "freelist_idx_t"):
        raise UnsupportedKernelError(
            "this kernel uses the SLAB allocator (CONFIG_SLAB, up to 6.7); "
            "dumpminer reads only SLUB kernels"
        )
    kmem_cache = prog.type("struct kmem_cache")
    if not _type_has_member(kmem_cache, "offset"):
        raise UnsupportedKernelError(
            "this kernel's slab allocator is not SLUB (struct kmem_cache has no 'offset': "
            "SLOB?); dumpminer reads only SLUB kernels"
        )


def _drgn_helper_factory() -> Any:
    """drgn's private per-cache SLUB helper class, checked for what is used."""
    import drgn
    import drgn.helpers.linux.slab as slab_helpers

    helper = getattr(slab_helpers, "_SlabCacheHelperSlub", None)
    if helper is None or not all(hasattr(helper, name) for name in DRGN_HELPER_METHODS):
        raise UnsupportedKernelError(
            f"drgn {drgn.__version__} lacks the slab internals dumpminer uses "
            f"(tested with drgn {TESTED_DRGN}: pip install 'drgn=={TESTED_DRGN}')"
        )
    return helper


def _has_type(prog: Program, name: str) -> bool:
    """Whether the kernel's debuginfo defines the type *name*."""
    try:
        prog.type(name)
    except LookupError:
        return False
    return True


def _type_has_member(type_: Any, member: str) -> bool:
    """Whether *type_* has *member* (drgn's ``has_member``, which looks into unions)."""
    return bool(type_.has_member(member))


def _has_member(obj: Object, member: str) -> bool:
    """Whether the struct *obj* (or the struct it points to) has *member*."""
    type_ = obj.type_
    while type_.kind.name in ("POINTER", "TYPEDEF"):
        type_ = type_.type
    return _type_has_member(type_, member)


def _has_member_type(prog: Program, type_name: str, member: str) -> bool:
    """Whether the struct named *type_name* has *member*."""
    return _type_has_member(prog.type(type_name), member)


def _nr_node_ids(prog: Program) -> int:
    """Possible NUMA nodes (drgn's helper, which handles !CONFIG_NUMA)."""
    from drgn.helpers.linux.nodemask import nr_node_ids

    return int(nr_node_ids(prog))


