"""
One report in any format: :func:`render` picks the renderer of a format
(table, JSON, CSV, Markdown, HTML), :func:`render_many` joins the reports of
several caches into one document. Each format has its module in this package;
every text from the dump is escaped for where it goes (:mod:`dumpminer.report.escape`).
Writing the report is :mod:`dumpminer.report.output`.
"""

from __future__ import annotations

from dumpminer.report.csv import render_csv
from dumpminer.report.json import MANY_SCHEMA, render_json, to_json_dict
from dumpminer.report.jsontext import dumps as json_text
from dumpminer.report.markdown import render_markdown
from dumpminer.report.model import Report
from dumpminer.report.table import render_table

FORMATS = ("table", "json", "csv", "markdown")


_RENDERERS = {
    "table": render_table,
    "json": render_json,
    "csv": render_csv,
    "markdown": render_markdown,
}


def render(report: Report, fmt: str, top: int | None = None) -> str:
    """
    Render *report* in *fmt*, one of :data:`FORMATS`; *top* limits the
    rows. Raises ValueError for another format.
    """
    if fmt == "html":
        from dumpminer.report.html import render_html

        return render_html([report], top)
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise ValueError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    return renderer(report, top)


def render_many(reports: list[Report], fmt: str, top: int | None = None) -> str:
    """
    Render the reports of several caches as one document: JSON wraps them in
    ``{"schema": "dumpminer.reports/1", "reports": [...]}``, CSV keeps one
    header, the others follow each other.
    """
    if fmt == "html":
        from dumpminer.report.html import render_html

        return render_html(reports, top)
    if fmt == "json":
        doc = {"schema": MANY_SCHEMA, "reports": [to_json_dict(r, top) for r in reports]}
        return json_text(doc) + "\n"
    parts = [render(r, fmt, top) for r in reports]
    if fmt == "csv":
        return parts[0] + "".join(p.split("\n", 1)[1] for p in parts[1:])
    return "\n".join(parts)
