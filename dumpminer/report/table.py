"""
The terminal table: the header lines, the top clusters with what they point at
and who allocated them, the string-less shape groups, the call sites, and the
commands to look closer.
"""

from __future__ import annotations

from dumpminer.report.callsites import shape_allocated_by
from dumpminer.report.escape import terminal_escape
from dumpminer.report.follow_up import follow_up_commands
from dumpminer.report.model import Report, leading_shape_group
from dumpminer.report.text import (
    cluster_allocated_by,
    group_points_to,
    header_lines,
    interval_text,
    points_to,
    sampled_note,
    shown_template,
    site_lines,
)

#: Rows in a terminal table when --top is not given.
TABLE_TOP = 25


def render_table(report: Report, top: int | None = None) -> str:
    """The top clusters as a terminal table, then how to look closer."""
    top = TABLE_TOP if top is None else top
    sampled = report.sample is not None
    header = ["#", "objects", *(["95% interval"] if sampled else []), "share", "context"]
    header += ["offset", "example", "template"]
    rows = [header]
    approx = "~" if sampled else ""
    shown = report.clusters[:top]
    for rank, c in enumerate(shown, 1):
        counts = report.counts(c)
        rows.append(
            [
                str(rank),
                f"{approx}{counts['objects']}",
                *([interval_text(report, c)] if sampled else []),
                f"{100 * report.share(c.objects):.2f}%",
                f"{approx}{counts['in_context']}",
                "-" if c.typical_offset is None else f"+{c.typical_offset:#x}",
                f"{c.examples[0]:#x}" if c.examples else "-",
                shown_template(c.template),
            ]
        )
    left = {0, len(header) - 2}  # rank and example; the template is last and free
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = [*header_lines(report), ""]
    if not shown:
        # String-less shape groups may still follow: a cache of pointers only.
        lines.append("no clusters to show" + (" (--top 0)" if report.clusters else ""))
        rows = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row[:-1], widths, strict=True))
        ]
        lines.append("  ".join([*cells, row[-1]]))
        points = points_to(report, index - 1) if index else ""
        if points:
            lines.append(f"{'':{widths[0] + 2}}points to: {terminal_escape(points)}")
        if index and report.call_sites is not None:
            by = terminal_escape(cluster_allocated_by(report, index - 1))
            lines.append(f"{'':{widths[0] + 2}}allocated by: {by}")
    lines += _shape_lines(report, top)
    if report.call_sites is not None:
        lines += ["", *(terminal_escape(line) for line in site_lines(report))]
    first = next((c.examples[0] for c in shown if c.examples), None)
    leader = leading_shape_group(report)
    if leader is not None and leader.examples and top > 0:
        first = leader.examples[0]  # look closer at what leads
    if first is not None:
        commands = follow_up_commands(
            first,
            report.cache.object_size,
            report.scan.context_before,
            report.scan.context_after,
        )
        lines += ["", f"look closer:  {commands[0]}", *(f"{'':14}{c}" for c in commands[1:])]
    return "\n".join(lines) + "\n"


def _shape_lines(report: Report, top: int) -> list[str]:
    """The table's section of string-less shape groups (none when attribution is off)."""
    shapes = report.shapes
    if shapes is None or not shapes.groups or top <= 0:
        return []
    lines = [
        "",
        f"string-less: {shapes.stringless} of {shapes.objects} objects hold no text "
        "(runs inside kernel pointers do not count); largest shape groups:"
        + ("" if shapes.exact else f" (INEXACT: {shapes.dropped_objects} objects dropped)")
        + sampled_note(report),
    ]
    for rank, g in enumerate(shapes.groups[:top], 1):
        lines.append(
            f"S{rank:<3} {g.objects:>8}  {100 * report.share(g.objects):6.2f}%  "
            f"{g.examples[0]:#x}  {terminal_escape(g.shape_text())}"
        )
        points = group_points_to(report, rank - 1)
        if points:
            lines.append(f"{'':5}points to: {terminal_escape(points)}")
        if g.allocated_by is not None:
            lines.append(f"{'':5}allocated by: {terminal_escape(shape_allocated_by(g))}")
    return lines
