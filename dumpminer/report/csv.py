"""
``--format csv``: one row per cluster (docs/report-format.md says what each
column holds); ``template`` is safe to open in a spreadsheet and
``template_hex`` holds the template's bytes as found.
"""

from __future__ import annotations

from dumpminer.report.escape import csv_cell, csv_line
from dumpminer.report.model import Report
from dumpminer.report.text import (
    fragment_text,
    points_to,
)

#: The columns of ``--format csv`` (docs/report-format.md says what each holds).
CSV_COLUMNS = [
    "cache", "rank", "template", "objects", "share", "occurrences", "in_context",
    "typical_offset", "distinct_members", "examples", "objects_ci95_low", "objects_ci95_high",
    "template_hex", "counts_exact", "distinct_members_exact", "allocator_fill",
    "points_to",
    "allocated_by", "allocated_by_objects", "binary",
]  # fmt: skip


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
    One row per cluster, most objects first. ``template`` is safe to open
    in a spreadsheet; ``template_hex`` is the template's bytes as found.
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
                ]
            )
        )
    return "".join(lines)
