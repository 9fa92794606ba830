"""
``--format markdown``: the header lines and the top clusters as a Markdown
table, every text from the dump escaped.
"""

from __future__ import annotations

from dumpminer.report.callsites import shape_allocated_by
from dumpminer.report.escape import markdown_escape
from dumpminer.report.model import Report
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


def render_markdown(report: Report, top: int | None = None) -> str:
    """The top clusters as a Markdown table."""
    sampled = report.sample is not None
    lines = [f"# dumpminer: {markdown_escape(report.cache.name)}", ""]
    lines += [markdown_escape(line) + "  " for line in header_lines(report)]
    interval_head, interval_rule = (" 95% interval |", "---:|") if sampled else ("", "")
    approx = "\\~" if sampled else ""
    lines += [
        "",
        f"| # | template | objects |{interval_head} share | in context | offset | examples "
        "| points to |" + (" allocated by |" if report.call_sites is not None else ""),
        f"|---|---|---:|{interval_rule}---:|---:|---:|---|---|"
        + ("---|" if report.call_sites is not None else ""),
    ]
    for rank, c in enumerate(report.clusters[:top], 1):
        counts = report.counts(c)
        offset = "" if c.typical_offset is None else f"{c.typical_offset:#x}"
        examples = ", ".join(f"`{a:#x}`" for a in c.examples)
        interval_cell = f" {interval_text(report, c)} |" if sampled else ""
        lines.append(
            f"| {rank} | {markdown_escape(shown_template(c.template))} | "
            f"{approx}{counts['objects']} |"
            f"{interval_cell} {100 * report.share(c.objects):.2f}% | "
            f"{approx}{counts['in_context']} | {offset} | {examples} | "
            f"{markdown_escape(points_to(report, rank - 1))} |"
            + (
                f" {markdown_escape(cluster_allocated_by(report, rank - 1))} |"
                if report.call_sites is not None
                else ""
            )
        )
    shapes = report.shapes
    if shapes is not None and shapes.groups:
        lines += [
            "",
            f"String-less objects: {shapes.stringless} of {shapes.objects} hold no text. "
            "Largest shape groups:" + sampled_note(report),
            "",
            "| # | objects | share | shape | examples | points to |"
            + (" allocated by |" if report.call_sites is not None else ""),
            "|---|---:|---:|---|---|---|" + ("---|" if report.call_sites is not None else ""),
        ]
        for rank, g in enumerate(shapes.groups[:top], 1):
            examples = ", ".join(f"`{a:#x}`" for a in g.examples)
            lines.append(
                f"| S{rank} | {g.objects} | {100 * report.share(g.objects):.2f}% | "
                f"{markdown_escape(g.shape_text())} | {examples} | "
                f"{markdown_escape(group_points_to(report, rank - 1))} |"
                + (
                    f" {markdown_escape(shape_allocated_by(g))} |"
                    if report.call_sites is not None
                    else ""
                )
            )
    if report.call_sites is not None:
        # Symbol names come from the dump: escaped, never in a code fence.
        lines += [
            "",
            *(markdown_escape(x.strip()) + "  " for x in site_lines(report)),
        ]
    return "\n".join(lines) + "\n"
