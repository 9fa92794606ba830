"""
The sections of a report: what was mined, how, and how far the walk got.

A :class:`~dumpminer.report.Report` holds, beside its fragments and clusters,
one frozen dataclass per section of the ``dumpminer.report/1`` JSON document
(docs/report-format.md): :class:`DumpFacts` (``dump``), :class:`CacheFacts`
(``cache``), :class:`ScanFacts` (``scan``), :class:`Progress` (``progress``,
with :class:`Interruption` and :class:`IncompleteDump`) and
:class:`SampleFacts` (``sample``). Mining fills them
(:mod:`dumpminer.mine`), the renderings read their attributes, and each
``to_json`` writes its section with the contract's keys in the contract's
order, so that mypy checks both sides of the contract and the document stays
the same byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dumpminer.sampling import SampledSlabs

__all__ = [
    "DEFAULT_NOISE_FLOOR",
    "CacheFacts",
    "DumpFacts",
    "DumpTime",
    "IncompleteDump",
    "Interruption",
    "ListedSlabs",
    "PointerNoise",
    "Progress",
    "SampleFacts",
    "ScanFacts",
]

#: ``diff``: changes of at most this many objects are below the noise floor:
#: two boots of the same guest differ by that much in background objects
#: (docs/diff.md). Here, not in :mod:`dumpminer.diff`, so that the command
#: line can name the default without importing ``diff`` for every ``mine``.
DEFAULT_NOISE_FLOOR = 8


def _hex(addresses: tuple[int, ...]) -> list[str]:
    """Kernel addresses as JSON gives them: ``0x``-prefixed hex strings."""
    return [f"{a:#x}" for a in addresses]


@dataclass(frozen=True)
class DumpTime:
    """When the dump was taken (``dump.time``), and where that was read."""

    #: Seconds since the epoch, or None when neither source gives it.
    seconds: int | None
    #: ``"header"`` (crash time) or the kernel clock read; None with no time.
    source: str | None


@dataclass(frozen=True)
class DumpFacts:
    """The ``dump`` section: which kernel and dump file were mined, with what debuginfo."""

    #: The dump file as given; None for a drgn program the caller opened.
    path: str | None
    #: The kernel release (``UTS_RELEASE``); None when VMCOREINFO lacks it.
    osrelease: str | None
    #: ``"elf"``, ``"kdump"`` or ``"kdump-flattened"``; None without a dump file.
    format: str | None
    #: VMCOREINFO's BUILD-ID; None without a dump file.
    build_id: str | None
    #: The vmlinux whose debug info was used; None on BTF or from a program.
    vmlinux: str | None
    #: Where types and symbols came from (docs/debuginfo.md); None from a program.
    debuginfo: str | None
    #: ``dumpminer mine`` and ``diff`` only: when the dump was taken. None
    #: leaves ``time`` and ``time_source`` out of the JSON.
    taken: DumpTime | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``dump`` object of the JSON document."""
        doc: dict[str, Any] = {
            "path": self.path,
            "osrelease": self.osrelease,
            "format": self.format,
            "build_id": self.build_id,
            "vmlinux": self.vmlinux,
            "debuginfo": self.debuginfo,
        }
        if self.taken is not None:
            doc["time"] = self.taken.seconds
            doc["time_source"] = self.taken.source
        return doc


@dataclass(frozen=True)
class CacheFacts:
    """
    The ``cache`` section: the cache(s) asked for and their sizes. ``allocated``
    is the objects the walk found when it read every slab
    (``allocated_from="walk"``), else the cache's lists' count, as crash's
    ``kmem -s`` makes it (``"lists"``; not exact unless ``allocated_exact``).
    """

    #: As asked: an exact name, an old name or a glob.
    name: str
    #: The caches actually walked.
    caches: tuple[str, ...]
    #: ``s->object_size``; the largest when several caches are walked.
    object_size: int
    #: Allocated objects, and objects in all slabs free or not.
    allocated: int
    total: int
    slabs: int
    #: Where ``allocated`` comes from: "walk" or "lists".
    allocated_from: str = "lists"
    #: False when ``allocated`` is not exact (a list or counter could not be read whole).
    allocated_exact: bool = True

    def to_json(self) -> dict[str, Any]:
        """The ``cache`` object of the JSON document."""
        return {
            "name": self.name,
            "caches": list(self.caches),
            "object_size": self.object_size,
            "allocated": self.allocated,
            "allocated_from": self.allocated_from,
            "allocated_exact": self.allocated_exact,
            "total": self.total,
            "slabs": self.slabs,
        }


@dataclass(frozen=True, kw_only=True)
class PointerNoise:
    """
    The ``scan.pointer_noise`` object: what the probe for runs of kernel-pointer
    bytes saw, and whether the walk blanked kernel pointers for it
    (:mod:`dumpminer.pointernoise`).
    """

    slabs_probed: int
    objects_probed: int
    #: Distinct runs made only of kernel-pointer bytes in the probed objects,
    #: and how many of them one probed slab held and no other.
    runs_seen: int
    runs_seen_in_one_slab: int
    #: At most how many distinct such runs the walk would meet: those seen in
    #: one slab scaled by the share of the cache probed, plus the others;
    #: exact when every slab was probed.
    runs_estimated: int
    #: Blank pointers when the estimate is over this (--max-fragments).
    threshold: int
    masked: bool

    def to_json(self) -> dict[str, Any]:
        """The ``scan.pointer_noise`` object of the JSON document."""
        return {
            "slabs_probed": self.slabs_probed,
            "objects_probed": self.objects_probed,
            "runs_seen": self.runs_seen,
            "runs_seen_in_one_slab": self.runs_seen_in_one_slab,
            "runs_estimated": self.runs_estimated,
            "threshold": self.threshold,
            "masked": self.masked,
        }


@dataclass(frozen=True, kw_only=True)
class ScanFacts:
    """The ``scan`` section: what the walk read, with which options, and what it skipped."""

    #: Allocated objects the walk read, in how many slabs.
    objects_scanned: int
    slabs: int
    #: Bytes of neighbouring memory read before and after each object.
    context_before: int = 0
    context_after: int = 0
    #: Shortest printable run counted.
    min_length: int = 3
    #: Kernel addresses blanked first: asked (--mask-pointers), or decided by
    #: the probe for pointer noise.
    pointers_masked: bool = False
    #: The probe for pointer noise, when one ran (no --mask-pointers or
    #: --keep-pointers, and enough words for their runs to matter).
    pointer_noise: PointerNoise | None = None
    #: Wall time of the walk, extraction and clustering (the one field that
    #: varies between runs).
    seconds: float
    #: Reads that failed and were skipped, and the lowest addresses among them.
    faults: int = 0
    fault_addresses: tuple[int, ...] = ()
    #: Slabs whose freelist loops or leaves the slab: skipped.
    corrupt_slabs: int = 0
    corrupt_slab_addresses: tuple[int, ...] = ()
    #: Per-CPU freelists drgn found looping or unreadable, by cache.
    cpu_freelist_errors: tuple[str, ...] = ()
    #: False once the fragment bound dropped fragments: counts may be short.
    exact: bool = True
    #: False once anything was folded or dropped.
    complete: bool = True
    #: The bound (--max-fragments); None: none.
    max_fragments: int | None = None
    dropped_fragments: int = 0
    folded_fragments: int = 0
    folded_templates: int = 0
    #: A listed fragment's count may be short by at most this.
    error_bound: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``scan`` object of the JSON document."""
        return {
            "objects_scanned": self.objects_scanned,
            "slabs": self.slabs,
            "context_before": self.context_before,
            "context_after": self.context_after,
            "min_length": self.min_length,
            "pointers_masked": self.pointers_masked,
            "pointer_noise": None if self.pointer_noise is None else self.pointer_noise.to_json(),
            "seconds": self.seconds,
            "faults": self.faults,
            "fault_addresses": _hex(self.fault_addresses),
            "corrupt_slabs": self.corrupt_slabs,
            "corrupt_slab_addresses": _hex(self.corrupt_slab_addresses),
            "cpu_freelist_errors": list(self.cpu_freelist_errors),
            "exact": self.exact,
            "complete": self.complete,
            "max_fragments": self.max_fragments,
            "dropped_fragments": self.dropped_fragments,
            "folded_fragments": self.folded_fragments,
            "folded_templates": self.folded_templates,
            "error_bound": self.error_bound,
        }


@dataclass(frozen=True)
class Interruption:
    """A walk stopped by SIGINT or SIGTERM: how far it got."""

    slabs_walked: int
    slabs_found: int


@dataclass(frozen=True)
class ListedSlabs:
    """
    What the caches' own lists gave a dump without its page array
    (:func:`~dumpminer.incomplete.reach_without_page_array`).
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
    listed: ListedSlabs

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


@dataclass(frozen=True)
class Progress:
    """
    The ``progress`` section: what cut the report short, if anything. A
    report is partial when a signal stopped its walk, or when the dump
    lacks its page array (the CLI's exit codes 130/143 and 10).
    """

    interrupted: Interruption | None = None
    incomplete: IncompleteDump | None = None

    @property
    def partial(self) -> bool:
        """Whether anything cut the report short."""
        return self.interrupted is not None or self.incomplete is not None

    def to_json(self) -> dict[str, Any]:
        """The ``progress`` object: ``{}`` for a whole report."""
        doc: dict[str, Any] = {}
        if self.interrupted is not None:
            doc["slabs_walked"] = self.interrupted.slabs_walked
            doc["slabs_found"] = self.interrupted.slabs_found
        if self.incomplete is not None:
            # An interrupted walk's slabs_walked stays first: it is the same count.
            doc = {**doc, **self.incomplete.to_json(), "interrupted": self.interrupted is not None}
        return doc


@dataclass(frozen=True)
class SampleFacts:
    """The ``sample`` section: what --sample asked for and drew (:mod:`dumpminer.sampling`)."""

    #: The request: a fraction of the slabs, or about this many objects.
    fraction: float | None
    objects: int | None
    seed: int
    #: Slabs drawn, of how many.
    slabs_sampled: int
    slabs_total: int
    #: Allocated objects in the slabs read, and the sum of their squares per slab.
    objects_sampled: int
    #: Slabs actually mined: fewer than drawn if some were unreadable.
    slabs_read: int
    slab_objects_square: int
    #: Allocated objects in the whole cache, to which counts are scaled.
    population: int

    def drawn(self) -> SampledSlabs:
        """The draw as :func:`~dumpminer.sampling.interval` takes it."""
        return SampledSlabs(
            slabs=self.slabs_read,
            slabs_total=self.slabs_total,
            objects=self.objects_sampled,
            objects_square=self.slab_objects_square,
            population=self.population,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``sample`` object of the JSON document."""
        return {
            "fraction": self.fraction,
            "objects": self.objects,
            "seed": self.seed,
            "slabs_sampled": self.slabs_sampled,
            "slabs_total": self.slabs_total,
            "objects_sampled": self.objects_sampled,
            "slabs_read": self.slabs_read,
            "slab_objects_square": self.slab_objects_square,
            "population": self.population,
        }
