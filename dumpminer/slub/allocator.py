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

from dumpminer.errors import UnsupportedKernelError
from dumpminer.slub.flags import slab_flag

__all__ = [
    "ListedSlabs",
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


class SlubAllocator:
    """
    SLUB as drgn's private helper reads it. One instance serves a program;
    get it with :func:`slab_allocator`.
    """

    def __init__(self, prog: Program, helper_factory: Any) -> None:
        self.prog = prog
        self._helper_factory = helper_factory
        # Before 5.17, the slab fields were in struct page.
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

    def readable_usage(self, cache: Object) -> tuple[int, int, int, list[str]]:
        """
        ``(slabs, objects, free objects found, errors)`` of *cache* when
        drgn's :func:`~drgn.helpers.linux.slab.slab_cache_usage` faults:
        the counters, less the free objects on what could be read (per-CPU
        freelists and partial slabs, the per-node partial lists). With errors,
        ``objects - free`` is an upper bound of the allocated objects.
        """
        slabs, objects = self.counters(cache)
        errors: list[str] = []
        info = self._helper(cache)._per_cpu_info(count_free_objects=True, catch_errors=True)
        free = int(info.num_free_objects)
        if info.error is not None:
            errors.append(f"per-CPU: {info.error}")
        from drgn.helpers.linux.list import validate_list_for_each_entry

        member = "slab_list" if _has_member_type(self.prog, self._slab_type, "slab_list") else "lru"
        for index, node in enumerate(self._nodes(cache)):
            try:
                for slab in validate_list_for_each_entry(
                    self._slab_type, node.partial.address_of_(), member
                ):
                    free += slab.objects.value_() - slab.inuse.value_()
            except (FaultError, ValidationError) as e:
                errors.append(f"node {index} partial: {e}")
        return slabs, objects, free, errors

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
        member = "slab" if _has_member(cpu_slab, "slab") else "page"
        for cpu in for_each_possible_cpu(self.prog):
            try:
                this = per_cpu_ptr(cpu_slab, cpu)
                active = this.member_(member).value_()
                if active:
                    yield active
                partial = this.partial if _has_member(this, "partial") else None
                if partial is None:
                    continue
                slab = partial.read_()
                for _ in range(MAX_LIST_SLABS):
                    if not slab:
                        break
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
    except FaultError:
        return int(prog["vmemmap_base"].value_())


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


