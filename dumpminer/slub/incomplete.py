"""
What a dump cut short still gives: the slabs reachable without the page array,
and the words a partial report says about them.

QEMU and kdump guests keep memblock's allocations at the top of physical
memory: the page array (every ``struct slab``), its page tables,
``mem_section`` and the per-CPU areas. A dump cut short (disk full, an
interrupted copy) loses them first, while most slab memory is still there.
When the page-array scan (:func:`~dumpminer.slub.walk.find_slab_pages`) could not
read it whole, :func:`reach_without_page_array` adds what the caches' own
lists name, as crash's ``kmem -S`` shows them, and each CPU's active slab read
without its ``struct slab``; :func:`incomplete_progress` is the report's
:class:`IncompleteDump`, saying why and what share of the cache that is
(docs/exit-codes.md, "A dump cut short").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drgn import Object, Program

from dumpminer.slub.caches import CacheUsage
from dumpminer.slub.walk import SlabPages, WalkStats, cpu_slab_pages, listed_slab_pages

__all__ = ["IncompleteDump", "ListReach", "incomplete_progress", "reach_without_page_array"]

#: How many list errors an incomplete report names.
NAMED_ERRORS = 5


@dataclass(frozen=True)
class ListReach:
    """
    What the caches' own lists gave a dump without its page array
    (:func:`~dumpminer.slub.incomplete.reach_without_page_array`).
    """

    #: Slabs the lists named; how many of them were unreadable, and how many
    #: the page-array scan had not found.
    listed_slabs: int
    listed_unreadable: int
    listed_new: int
    #: Each CPU's active slab, read without its struct slab.
    cpu_slabs_without_page_array: int
    #: Whether the caches keep a list of full slabs (SLUB debugging).
    full_lists_tracked: bool
    #: The first errors met on the lists.
    list_errors: tuple[str, ...]


@dataclass(frozen=True)
class IncompleteDump:
    """A dump that lacks part of its page array (a dump cut short): why, and what it reached."""

    #: Why, in one line, for the table's PARTIAL line.
    why: str
    slabs_walked: int
    slabs_total: int
    share_of_slabs: float
    objects_walked: int
    objects_allocated: int
    #: Whether ``objects_allocated`` is drgn's exact count.
    allocated_exact: bool
    page_array_pages: int
    page_array_unread: int
    listed: ListReach

    def to_json(self) -> dict[str, Any]:
        """Its keys of ``progress``, in the contract's order."""
        listed = self.listed
        return {
            "incomplete_dump": self.why,
            "slabs_walked": self.slabs_walked,
            "slabs_total": self.slabs_total,
            "share_of_slabs": self.share_of_slabs,
            "objects_walked": self.objects_walked,
            "objects_allocated": self.objects_allocated,
            "allocated_exact": self.allocated_exact,
            "page_array_pages": self.page_array_pages,
            "page_array_unread": self.page_array_unread,
            "listed_slabs": listed.listed_slabs,
            "listed_unreadable": listed.listed_unreadable,
            "listed_new": listed.listed_new,
            "cpu_slabs_without_page_array": listed.cpu_slabs_without_page_array,
            "full_lists_tracked": listed.full_lists_tracked,
            "list_errors": list(listed.list_errors),
        }



def reach_without_page_array(
    prog: Program, caches: list[Object], found: SlabPages
) -> tuple[SlabPages, ListReach]:
    """
    Add to the slabs the page-array scan *found* those the caches' own lists
    name (:func:`~dumpminer.slub.walk.listed_slab_pages`), for a dump whose page
    array could not be read whole; and say what the lists gave. (What the
    lists could not reach is counted in the :class:`ListReach`, not in the
    walk's statistics: the walk counts only what it reads.)
    """
    listing = WalkStats()
    listed_pages, listed = listed_slab_pages(prog, caches, listing)
    known = set(found.address.tolist())
    extra = [page for page in listed_pages if page.address not in known]
    known.update(page.address for page in extra)
    # A CPU's active slab can be read without its struct slab: the CPU's
    # own data says where it is and which objects are free.
    by_cpu = [page for page in cpu_slab_pages(prog, caches) if page.address not in known]
    named = set().union(*(slabs.all for slabs in listed))
    facts = ListReach(
        listed_slabs=len(named),
        listed_unreadable=len(named) - len(listed_pages),
        listed_new=len(extra),
        cpu_slabs_without_page_array=len(by_cpu),
        full_lists_tracked=any(slabs.full_tracked for slabs in listed),
        list_errors=tuple(sorted({e for slabs in listed for e in slabs.errors})[:NAMED_ERRORS]),
    )
    return SlabPages.concatenate(
        [found, SlabPages.from_pages(extra + by_cpu)]
    ).sorted_by_pfn(), facts


def incomplete_progress(
    listing: ListReach, usages: list[CacheUsage], stats: WalkStats
) -> IncompleteDump:
    """
    The ``progress`` of a report cut short by the dump: why, and what share
    of the cache's slabs and objects the walk reached.
    """
    slabs_total = sum(u.slabs for u in usages)
    objects_total = sum(u.allocated for u in usages)
    share = stats.slabs / slabs_total if slabs_total else 0.0
    lists = "per-CPU, per-node partial" + (
        " and full" if listing.full_lists_tracked else "; full slabs are not listed"
    )
    why = (
        f"the dump lacks {stats.page_array_unread} of the {stats.page_array_pages} entries "
        f"of the page array (from PFN {stats.first_unread_pfn}; a dump cut short?): "
        f"walked {stats.slabs} of the cache's {slabs_total} slabs ({share:.1%}) and "
        f"{stats.objects_scanned} of about {objects_total} allocated objects; the cache's lists "
        f"({lists}) named {listing.listed_slabs} slabs, {listing.listed_new} of them "
        f"beyond the scan, {listing.listed_unreadable} unreadable; "
        f"{listing.cpu_slabs_without_page_array} per-CPU slabs read without it"
    )
    return IncompleteDump(
        why=why,
        slabs_walked=stats.slabs,
        slabs_total=slabs_total,
        share_of_slabs=round(share, 4),
        objects_walked=stats.objects_scanned,
        objects_allocated=objects_total,
        allocated_exact=all(u.exact for u in usages),
        page_array_pages=stats.page_array_pages,
        page_array_unread=stats.page_array_unread,
        listed=listing,
    )
