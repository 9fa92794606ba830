"""
The words that the table and Markdown share: the header lines (what was mined,
sampling, blanked pointers, the memory bound, a partial walk, the LEADING
group) and the cells of a cluster's row.
"""

from __future__ import annotations

from dumpminer.analysis.attribution import Attribution, OffsetCensus
from dumpminer.clustering.cluster import Cluster
from dumpminer.extract.fragments import Fragment
from dumpminer.report.callsites import allocated_by, call_site_lines
from dumpminer.report.escape import terminal_escape
from dumpminer.report.model import DumpFacts, Report, ScanFacts, leading_shape_group


def fragment_text(data: bytes) -> str:
    """Fragment bytes as a str; they are printable ASCII by construction."""
    return data.decode("latin-1")


def attribution_of(report: Report, rank: int) -> Attribution | None:
    """The attribution of the cluster at index *rank*, if it was attributed."""
    return report.attribution[rank] if rank < len(report.attribution) else None


def census(report: Report) -> OffsetCensus:
    """What every attributed cluster and shape group of *report* holds per offset."""
    groups = () if report.shapes is None else report.shapes.groups
    return OffsetCensus([*report.attribution, *(g.attribution for g in groups)])


def points_to(report: Report, rank: int) -> str:
    """
    The ``points to`` text of the cluster at index *rank*: the offsets that
    tell its struct apart (:class:`OffsetCensus`); empty if not attributed.
    """
    attribution = attribution_of(report, rank)
    return "" if attribution is None else attribution.points_to_line(census(report))


def dump_line(dump: DumpFacts) -> str:
    """What was mined: the dump file, or a program opened by the caller."""
    release = dump.osrelease or "of unknown release"
    if dump.path is None:
        # mine(prog, ...) without a Dump: a drgn program the caller opened.
        return f"kernel {release}, from a drgn program (no dump file given)"
    source = ", types from BTF+kallsyms" if dump.debuginfo == "btf+kallsyms" else ""
    return f"dump {dump.path} ({dump.format or 'unknown format'}, {release}{source})"


def header_lines(report: Report) -> list[str]:
    cache, scan = report.cache, report.scan
    lines = [
        dump_line(report.dump),
        f"cache {cache.name} -> {', '.join(cache.caches)}: object size "
        f"{cache.object_size}, {cache.allocated} allocated of {cache.total}",
        f"scanned {scan.objects_scanned} objects in {scan.slabs} slabs, "
        f"{scan.seconds:.2f} s; faults {scan.faults}, "
        f"corrupt slabs {scan.corrupt_slabs}",
    ]
    if report.sample is not None:
        sample = report.sample
        lines.append(
            f"SAMPLED: {sample.slabs_sampled} of {sample.slabs_total} slabs "
            f"(seed {sample.seed}); counts scaled to the cache, ~ marks estimates, "
            "with their 95% interval"
        )
    lines += pointer_lines(scan)
    lines += bound_lines(scan)
    progress = report.progress
    if progress.incomplete is not None:
        lines.append(f"PARTIAL: {progress.incomplete.why}")
    elif progress.interrupted is not None:
        lines.append(
            f"PARTIAL: interrupted after {progress.interrupted.slabs_walked} of "
            f"{progress.interrupted.slabs_found} slabs"
        )
    leading = leading_line(report)
    if leading is not None:
        lines.append(leading)
    return [terminal_escape(line) for line in lines]


def leading_line(report: Report) -> str | None:
    """
    The ``LEADING:`` line, unescaped, when a string-less shape group holds
    more objects than the largest string cluster (:func:`leading_shape_group`):
    every format names that group before its rows.
    """
    leader = leading_shape_group(report)
    if leader is None:
        return None
    largest = report.clusters[0].objects if report.clusters else 0
    sampled = " sampled" if report.sample is not None else ""
    return (
        f"LEADING: string-less shape group S1, {leader.objects}{sampled} objects "
        f"({100 * report.share(leader.objects):.2f}%), more than the largest string "
        f"cluster ({largest}): {leader.shape_text()}"
    )


def group_points_to(report: Report, index: int) -> str:
    """The ``points to`` text of the shape group at index *index*; empty if none."""
    shapes = report.shapes
    if shapes is None or index >= len(shapes.groups):
        return ""
    return shapes.groups[index].attribution.points_to_line(census(report))


def pointer_lines(scan: ScanFacts) -> list[str]:
    """A warning when runs of kernel-pointer bytes were counted (--keep-pointers)."""
    if scan.pointers_masked:
        return []
    return [
        "POINTER BYTES KEPT: --keep-pointers counts the printable low bytes of kernel "
        "pointers as text; rows may be pointer bytes"
    ]


def bound_lines(scan: ScanFacts) -> list[str]:
    """What the memory bound (--max-fragments) did, when it did anything."""
    lines = []
    if not scan.exact:
        lines.append(
            f"INEXACT: {scan.dropped_fragments} rare fragments fitting no template were "
            f"dropped (--max-fragments {scan.max_fragments}); counts may be short by "
            f"up to {scan.error_bound} per dropped member"
        )
    if scan.folded_fragments:
        lines.append(
            f"folded: {scan.folded_fragments} member fragments counted into "
            f"{scan.folded_templates} templates only (--max-fragments "
            f"{scan.max_fragments}); template counts " + ("exact" if scan.exact else "as above")
        )
    return lines


def shown_template(template: bytes) -> str:
    """A template for the table: quoted when spaces at its ends would hide."""
    text = terminal_escape(fragment_text(template))
    return f'"{text}"' if text != text.strip() else text


def interval_text(report: Report, item: Fragment | Cluster) -> str:
    """The 95% interval of a sampled count, as ``LOW-HIGH``; empty when exact."""
    bounds = report.counts(item).get("objects_ci95")
    return "" if bounds is None else f"{bounds[0]}-{bounds[1]}"


def sampled_note(report: Report) -> str:
    """
    What shape-group counts are with --sample: of the objects read, not
    scaled (string-less objects carry no fragment to scale); empty when exact.
    """
    if report.sample is None:
        return ""
    return f" SAMPLED: counts of the {report.sample.objects_sampled} objects read, not scaled."


def cluster_allocated_by(report: Report, index: int) -> str:
    """The ``allocated by`` text of the cluster at *index*, sampled counts said so."""
    objects = report.clusters[index].objects if index < len(report.clusters) else None
    return allocated_by(report.call_sites, index, objects, report.sample is not None)


def site_lines(report: Report) -> list[str]:
    """The call-site section's lines (none without alloc tracks), sampled counts said so."""
    if report.call_sites is None:
        return []
    return call_site_lines(report.call_sites, report.sample is not None)
