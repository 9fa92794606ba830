"""
``--format csv``: one row per cluster, then one per string-less shape group
and one per allocation call site, told apart by the ``kind`` column
(docs/report-format.md says what each column holds for each kind);
``template`` is safe to open in a spreadsheet and ``template_hex`` holds the
template's bytes as found.
"""

from __future__ import annotations

from dumpminer.report.callsites import site_details
from dumpminer.report.escape import csv_cell, csv_line
from dumpminer.report.model import Report, leading_shape_group
from dumpminer.report.text import (
    fragment_text,
    group_points_to,
    points_to,
)

#: The columns of ``--format csv`` (docs/report-format.md says what each holds).
#: Columns are only ever added at the end.
CSV_COLUMNS = [
    "cache", "rank", "template", "objects", "share", "occurrences", "in_context",
    "typical_offset", "distinct_members", "examples", "objects_ci95_low", "objects_ci95_high",
    "template_hex", "counts_exact", "distinct_members_exact", "allocator_fill",
    "points_to",
    "allocated_by", "allocated_by_objects", "binary",
    "kind", "leading", "allocated_by_sampled", "detail",
]  # fmt: skip

#: The ``kind`` of each row: a string cluster, a string-less shape group, a call site.
KIND_CLUSTER, KIND_SHAPE, KIND_CALL_SITE = "cluster", "shape_group", "call_site"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _csv_allocated_by(report: Report, index: int) -> list[object]:
    """A cluster's top call site and its objects; empty cells without tracks."""
    sites = report.call_sites
    if sites is None or index >= len(sites.clusters) or not sites.clusters[index].sites:
        return ["", ""]
    top = sites.clusters[index].sites[0]
    return [csv_cell(top.name), top.objects]


def render_csv(report: Report, top: int | None = None) -> str:
    """
    One row per cluster, most objects first, then the shape groups and the
    call sites. ``template`` is safe to open in a spreadsheet;
    ``template_hex`` is the template's bytes as found.
    """
    lines = [csv_line(list(CSV_COLUMNS))]
    for rank, c in enumerate(report.clusters[:top], 1):
        counts = report.counts(c)
        low, high = counts.get("objects_ci95", ("", ""))
        lines.append(
            csv_line(
                [
                    csv_cell(report.cache.name),
                    rank,
                    csv_cell(fragment_text(c.template)),
                    counts["objects"],
                    f"{report.share(c.objects):.6f}",
                    counts["occurrences"],
                    counts["in_context"],
                    "" if c.typical_offset is None else c.typical_offset,
                    c.distinct_members,
                    " ".join(f"{a:#x}" for a in c.examples),
                    low,
                    high,
                    c.template.hex(),
                    _flag(report.scan.exact),
                    _flag(c.members_exact),
                    _flag(c.fill is not None),
                    csv_cell(points_to(report, rank - 1)),
                    *_csv_allocated_by(report, rank - 1),
                    _flag(c.binary),
                    KIND_CLUSTER,
                    "false",
                    "",
                    "",
                ]
            )
        )
    lines += _shape_rows(report, top)
    lines += _call_site_rows(report)
    return "".join(lines)


def _shape_rows(report: Report, top: int | None) -> list[str]:
    """One row per string-less shape group (``kind`` ``shape_group``), S1 first."""
    shapes = report.shapes
    if shapes is None:
        return []
    leader = leading_shape_group(report)
    rows = []
    for rank, g in enumerate(shapes.groups[:top], 1):
        sites = g.allocated_by or ()
        text = g.shape_text()
        rows.append(
            csv_line(
                [
                    csv_cell(report.cache.name),
                    rank,
                    csv_cell(text),
                    g.objects,
                    f"{report.share(g.objects):.6f}",
                    "",
                    "",
                    "",
                    "",
                    " ".join(f"{a:#x}" for a in g.examples),
                    "",
                    "",
                    text.encode("latin-1", "replace").hex(),
                    _flag(shapes.exact),
                    "",
                    "false",
                    csv_cell(group_points_to(report, rank - 1)),
                    csv_cell(sites[0][0]) if sites else "",
                    sites[0][1] if sites else "",
                    "false",
                    KIND_SHAPE,
                    _flag(rank == 1 and leader is not None),
                    len(g.sampled) if g.allocated_by is not None else "",
                    "",
                ]
            )
        )
    return rows


def _call_site_rows(report: Report) -> list[str]:
    """One row per listed call site of each cache (``kind`` ``call_site``)."""
    sites = report.call_sites
    if sites is None:
        return []
    rows = []
    for entry in sites.caches:
        for rank, site in enumerate(entry.sites, 1):
            stack = site.stacks[0].frames if site.stacks else ()
            detail = f"{entry.cache}: {site_details(site)}"
            if stack:
                detail += "; stack: " + " < ".join(stack)
            rows.append(
                csv_line(
                    [
                        csv_cell(report.cache.name),
                        rank,
                        csv_cell(site.name),
                        site.objects,
                        f"{site.objects / entry.objects:.6f}" if entry.objects else "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        "",
                        site.name.encode("latin-1", "replace").hex(),
                        _flag(not sites_sampled(report)),
                        "",
                        "false",
                        "",
                        csv_cell(site.name),
                        site.objects,
                        "false",
                        KIND_CALL_SITE,
                        "false",
                        "",
                        csv_cell(detail),
                    ]
                )
            )
    return rows


def sites_sampled(report: Report) -> bool:
    """Whether call-site counts are of a sample (--sample): then not scaled."""
    return report.sample is not None
