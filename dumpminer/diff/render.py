"""
A :class:`~dumpminer.diff.compare.Diff` as a terminal table, the
``dumpminer.diff/1`` JSON document (docs/diff.md), CSV or Markdown; the HTML
page is :mod:`dumpminer.diff.html`. Every text from a dump is escaped for
where it goes (:mod:`dumpminer.report.escape`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

from dumpminer.diff.compare import Diff
from dumpminer.diff.json import render_diff_json
from dumpminer.diff.text import header_lines, shown_changes, signed
from dumpminer.report.escape import csv_cell, markdown_escape, terminal_escape

#: Rows in a terminal table when --top is not given.
TABLE_TOP = 25


# --- Rendering --------------------------------------------------------------------------------


def render_diff_table(diff: Diff, top: int | None = None) -> str:
    """Per cache, the changed clusters above the noise floor as a terminal table."""
    top = TABLE_TOP if top is None else top
    lines = header_lines(diff)
    for c in diff.caches:
        lines += [
            "",
            terminal_escape(
                f"cache {c.cache}: {c.old['allocated']} -> {c.new['allocated']} allocated"
            ),
        ]
        rows = [("status", "old", "new", "delta", "per hour", "offset", "template")]
        for ch in shown_changes(c.clusters, top):
            rows.append(
                (
                    ch.status,
                    str(ch.old),
                    str(ch.new),
                    signed(ch.delta),
                    signed(ch.per_hour),
                    "-" if ch.typical_offset is None else f"+{ch.typical_offset:#x}",
                    terminal_escape(ch.key),
                )
            )
        if len(rows) == 1:
            lines.append("no cluster changed by more than the noise floor")
            continue
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row[:-1], widths, strict=True))
            ]
            lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines) + "\n"


def render_diff_csv(diff: Diff, top: int | None = None) -> str:
    """One row per changed cluster above the noise floor."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["cache", "status", "template", "old_objects", "new_objects", "delta", "per_hour",
         "typical_offset", "examples", "compared", "note"]
    )  # fmt: skip
    for c in diff.caches:
        if c.limits:
            # The rows below compare only what both sides list: said in a row of its own,
            # so that it is there even when no row follows.
            writer.writerow(
                [csv_cell(c.cache), "limited", "", "", "", "", "", "", "", c.compared,
                 csv_cell("; ".join(c.limits))]
            )  # fmt: skip
        for ch in shown_changes(c.clusters, top):
            writer.writerow(
                [
                    csv_cell(c.cache),
                    ch.status,
                    csv_cell(ch.key),
                    ch.old,
                    ch.new,
                    ch.delta,
                    "" if ch.per_hour is None else ch.per_hour,
                    "" if ch.typical_offset is None else ch.typical_offset,
                    " ".join(ch.examples),
                    c.compared,
                    csv_cell("; ".join(c.limits)),
                ]
            )
    return out.getvalue()


def render_diff_markdown(diff: Diff, top: int | None = None) -> str:
    """Per cache, a Markdown table of the changed clusters."""
    lines = ["# dumpminer diff", ""]
    lines += [markdown_escape(line) + "  " for line in header_lines(diff)]
    for c in diff.caches:
        lines += [
            "",
            f"## {markdown_escape(c.cache)}",
            "",
            "| status | template | old | new | delta | per hour | offset |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for ch in shown_changes(c.clusters, top):
            offset = "" if ch.typical_offset is None else f"{ch.typical_offset:#x}"
            lines.append(
                f"| {ch.status} | {markdown_escape(ch.key)} | {ch.old} | {ch.new} | "
                f"{signed(ch.delta)} | {signed(ch.per_hour)} | {offset} |"
            )
    return "\n".join(lines) + "\n"


def render_diff(diff: Diff, fmt: str, top: int | None = None) -> str:
    """Render *diff* in *fmt*: table, json, csv, markdown or html."""
    if fmt == "html":
        from dumpminer.diff.html import render_diff_html

        return render_diff_html(diff, top)
    renderers: dict[str, Callable[[Diff, int | None], str]] = {
        "table": render_diff_table,
        "json": render_diff_json,
        "csv": render_diff_csv,
        "markdown": render_diff_markdown,
    }
    return renderers[fmt](diff, top)
