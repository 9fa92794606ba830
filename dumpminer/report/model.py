"""
The report as data: :class:`Report`, what one mining run found, and its
sections: what was mined, how, and how far the walk got.

A :class:`Report` holds, beside its fragments and clusters,
one frozen dataclass per section of the ``dumpminer.report/1`` JSON document
(docs/report-format.md): :class:`DumpFacts` (``dump``), :class:`CacheFacts`
(``cache``), :class:`ScanFacts` (``scan``), :class:`Progress` (``progress``,
with :class:`Interruption` and :class:`IncompleteDump`) and
:class:`SampleFacts` (``sample``). Mining fills them
(:mod:`dumpminer.pipeline`), the renderings (one module per format beside
this one) read their attributes and never the dump, and each ``to_json``
writes its section with the contract's keys in the contract's order, so
that mypy checks both sides of the contract and the document stays the same
byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dumpminer.analysis.attribution import Attribution
from dumpminer.analysis.callsites import CallSiteReport
from dumpminer.analysis.shapes import ShapeGroup, ShapeSummary
from dumpminer.clustering.cluster import Cluster
from dumpminer.dump.dumptime import iso_utc
from dumpminer.extract.fragments import Fragment
from dumpminer.slub.incomplete import IncompleteDump, ListReach
from dumpminer.slub.sampling import SampledSlabs, interval

__all__ = [
    "DEFAULT_NOISE_FLOOR",
    "CacheFacts",
    "DumpFacts",
    "DumpTime",
    "IncompleteDump",
    "Interruption",
    "ListReach",
    "Progress",
    "Report",
    "SampleFacts",
    "ScanFacts",
    "leading_shape_group",
]

#: ``diff``: changes of at most this many objects are below the noise floor:
#: two boots of the same guest differ by that much in background objects
#: (docs/diff.md). Here, not in :mod:`dumpminer.diff.compare`, so that the command
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
            doc["time_utc"] = iso_utc(self.taken.seconds)
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
            "total": self.total,
            "slabs": self.slabs,
            # Added by issue 22, at the end as every added key is.
            "allocated_from": self.allocated_from,
            "allocated_exact": self.allocated_exact,
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
    #: Runs of kernel-pointer bytes left out (the default; False with
    #: --keep-pointers): docs/extraction.md, "Pointer bytes".
    pointers_masked: bool = True
    #: How many runs (of at least min_length bytes, in objects) that left out.
    pointer_runs: int = 0
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
            "pointer_runs": self.pointer_runs,
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
    """The ``sample`` section: what --sample asked for and drew (:mod:`dumpminer.slub.sampling`)."""

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
        """The draw as :func:`~dumpminer.slub.sampling.interval` takes it."""
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


#: Clusters whose first example object a report carries byte by byte, for
#: the HTML page's ``rd -a``-style dumps (:attr:`Report.example_bytes`).
HTML_EXAMPLES = 10
#: Most bytes of one example object carried so.
HTML_OBJECT_BYTES = 512


@dataclass(frozen=True)
class Report:
    """Everything one mining run found, ready to render."""

    dump: DumpFacts
    cache: CacheFacts
    scan: ScanFacts
    fragments: list[Fragment]
    clusters: list[Cluster]
    #: What cut the report short, if anything (see :attr:`partial`).
    progress: Progress = field(default_factory=Progress)
    #: With --sample: what was drawn (see :mod:`dumpminer.slub.sampling`); else None.
    sample: SampleFacts | None = None
    #: SIGINT/SIGTERM that arrived after the walk, held until the report was
    #: whole; the CLI exits 130/143 for them after writing it.
    late_signals: tuple[int, ...] = ()
    #: For --format html: object address -> its bytes, for the top clusters'
    #: first examples (see :func:`dumpminer.pipeline.attach_example_bytes`).
    example_bytes: Mapping[int, bytes] = field(default_factory=dict)
    #: Pointer attribution of the top clusters, in cluster order (fewer than
    #: the clusters: only the top ones are attributed); empty when off.
    attribution: tuple[Attribution, ...] = ()
    #: The string-less objects' shape groups; None when attribution is off.
    shapes: ShapeSummary | None = None
    #: Seconds spent attributing after the walk.
    attribution_seconds: float = 0.0
    #: Allocation call sites, when the cache keeps alloc tracks (slub_debug=U).
    call_sites: CallSiteReport | None = None

    @property
    def partial(self) -> bool:
        """Whether a signal or a dump cut short stopped the walk early."""
        return self.progress.partial

    def share(self, objects: int) -> float:
        """*objects* (as counted) as a fraction of the cache's allocated objects."""
        if self.sample is not None:
            sampled = self.sample.objects_sampled
            return objects / sampled if sampled else 0.0
        allocated = self.cache.allocated
        return objects / allocated if allocated else 0.0

    def counts(self, item: Fragment | Cluster) -> dict[str, Any]:
        """
        The count fields of a fragment or cluster: as counted, or with
        --sample scaled to the whole cache, with the sampled count and a 95%
        interval for ``objects`` beside them (:func:`dumpminer.slub.sampling.interval`).
        """
        if self.sample is None:
            return {
                "objects": item.objects,
                "occurrences": item.occurrences,
                "in_context": item.in_context,
            }
        sample = self.sample
        sampled, population = sample.objects_sampled, sample.population
        scale = population / sampled if sampled else 0.0
        low, high = interval(item.objects, item.slab_square, item.slab_cross, sample.drawn())
        return {
            "objects": round(item.objects * scale),
            "occurrences": round(item.occurrences * scale),
            "in_context": round(item.in_context * scale),
            "objects_ci95": [low, high],
            "sampled_objects": item.objects,
        }


def leading_shape_group(report: Report) -> ShapeGroup | None:
    """
    The largest string-less shape group when it holds more objects than the
    largest string cluster, else None. A leak whose objects hold only
    pointers is listed after the clusters; when it is the biggest thing in
    the cache, the header says so, so that it is not read past. (Both counts
    are as walked: with --sample, raw sample counts on both sides.)
    """
    shapes = report.shapes
    if shapes is None or not shapes.groups:
        return None
    group = shapes.groups[0]
    # Binary-looking clusters (listed last) are not strings.
    largest = next((c.objects for c in report.clusters if not c.binary), 0)
    return group if group.objects > largest else None
