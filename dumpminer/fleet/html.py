"""
The fleet's HTML page: one self-contained file, a row per template with a
small chart of its objects in each dump, by dump time.

Rendered with Jinja2 (``dumpminer/fleet/templates``) with autoescaping on;
every text that came from a dump (template, host, path, error) also passes
through :func:`~dumpminer.report.terminal_escape`, so no control byte reaches
the page. No script, style sheet, font or image is loaded: charts are inline
SVG, as in ``mine``'s page.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

from dumpminer.fleet.model import FAILED, MINED, REUSED, FleetReport, TemplateRow
from dumpminer.fleet.shown import summary_line, when
from dumpminer.report.escape import terminal_escape

#: Templates on the page when --top is not given.
HTML_TOP = 100
#: Width and height of a row's chart, in pixels.
CHART_WIDTH, CHART_HEIGHT = 180, 28


@dataclass(frozen=True, slots=True)
class Spark:
    """One bar of a row's chart: a dump's objects, scaled to the row's largest."""

    x: float
    width: float
    height: float
    title: str


def sparks(row: TemplateRow) -> list[Spark]:
    """The bars of *row*'s chart: one per dump that carries it, by dump time."""
    counts = row.per_dump
    largest = max((c.objects for c in counts), default=0) or 1
    step = CHART_WIDTH / max(len(counts), 1)
    return [
        Spark(
            x=round(i * step, 2),
            width=round(max(step - 1, 1), 2),
            height=round(max(c.objects / largest * CHART_HEIGHT, 1), 2),
            title=f"{when(c.time)} {c.host or '-'}: {c.objects} objects ({c.share:.2%}) {c.path}",
        )
        for i, c in enumerate(counts)
    ]


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dumpminer.fleet", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["shown"] = lambda value: terminal_escape(str(value))
    env.filters["when"] = when
    return env


def render_fleet_html(fleet: FleetReport, top: int | None = None) -> str:
    """The fleet report as one HTML page."""
    shown = fleet.found if fleet.find is not None else fleet.templates[: top or HTML_TOP]
    rows = [(row, sparks(row)) for row in shown]
    template = _environment().get_template("fleet.html.j2")
    return template.render(
        fleet=fleet,
        rows=rows,
        more=0 if fleet.find is not None else len(fleet.templates) - len(shown),
        summary=summary_line(fleet),
        counts={
            "mined": fleet.count(MINED),
            "reused": fleet.count(REUSED),
            "failed": fleet.count(FAILED),
        },
        chart_width=CHART_WIDTH,
        chart_height=CHART_HEIGHT,
    )
