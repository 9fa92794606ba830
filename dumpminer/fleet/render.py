"""
The fleet report's formats: table (a terminal), JSON (``dumpminer.fleet/1``,
docs/fleet.md), CSV, Markdown; the HTML page is :mod:`dumpminer.fleet.html`.

Every text that came from a dump (templates, host names, paths, errors) is
escaped for its format: :func:`~dumpminer.report.terminal_escape` on a
terminal, :func:`~dumpminer.report.markdown_escape` in Markdown,
:func:`~dumpminer.report.csv_cell` in CSV.
"""

from __future__ import annotations

from typing import Any

from dumpminer.fleet.model import (
    FAILED,
    FLEET_SCHEMA,
    MINED,
    REUSED,
    DumpEntry,
    FleetReport,
    HostGrowth,
    TemplateRow,
)
from dumpminer.fleet.shown import summary_line, when
from dumpminer.report.escape import csv_cell, csv_line, markdown_escape, terminal_escape
from dumpminer.report.jsontext import dumps as json_text

FLEET_FORMATS = ("table", "json", "csv", "markdown", "html")
#: Template rows in a table or Markdown when --top is not given.
TABLE_TOP = 25


def _growth_json(g: HostGrowth) -> dict[str, Any]:
    return {
        "host": g.host,
        "dumps": g.dumps,
        "first_time": g.first_time,
        "last_time": g.last_time,
        "hours": g.hours,
        "first_objects": g.first_objects,
        "last_objects": g.last_objects,
        "per_hour": g.per_hour,
    }


def row_json(row: TemplateRow) -> dict[str, Any]:
    """One template row of ``dumpminer.fleet/1``."""
    return {
        "cache": row.cache,
        "template": row.template,
        "sources": list(row.sources),
        "dumps": row.dumps,
        "objects": row.objects,
        "share": {"min": row.share_min, "median": row.share_median, "max": row.share_max},
        "first_seen": row.first_seen,
        "last_seen": row.last_seen,
        "hosts": list(row.hosts),
        "per_dump": [
            {
                "digest": c.digest,
                "path": c.path,
                "objects": c.objects,
                "share": c.share,
                "time": c.time,
                "host": c.host,
            }
            for c in row.per_dump
        ],
        "growth": [_growth_json(g) for g in row.growth],
    }


def dump_json(dump: DumpEntry) -> dict[str, Any]:
    """One dump of ``dumpminer.fleet/1``."""
    return {
        "path": dump.path,
        "digest": dump.digest,
        "status": dump.status,
        "report": dump.report,
        "exit_code": dump.exit_code,
        "error": dump.error,
        "host": dump.host,
        "time": dump.time,
        "time_source": dump.time_source,
        "osrelease": dump.osrelease,
        "build_id": dump.build_id,
        "format": dump.format,
        "size": dump.size,
        "caches": [
            {
                "name": c.name,
                "caches": list(c.caches),
                "allocated": c.allocated,
                "partial": c.partial,
                "clusters": len(c.clusters),
                "objects": sum(n for _, n in c.clusters),
            }
            for c in dump.caches
        ],
    }


def to_fleet_dict(fleet: FleetReport, top: int | None = None) -> dict[str, Any]:
    """The ``dumpminer.fleet/1`` document; *top* limits the template rows."""
    return {
        "schema": FLEET_SCHEMA,
        "settings": fleet.settings,
        "out": fleet.out,
        "summary": {
            "dumps": len(fleet.dumps),
            "mined": fleet.count(MINED),
            "reused": fleet.count(REUSED),
            "failed": fleet.count(FAILED),
            "templates": len(fleet.templates),
        },
        "timing": fleet.timing,
        "dumps": [dump_json(d) for d in fleet.dumps],
        "templates": [row_json(r) for r in fleet.templates[:top]],
        "find": None
        if fleet.find is None
        else {"query": fleet.find, "templates": [row_json(r) for r in fleet.found]},
    }


def _shares(row: TemplateRow) -> str:
    return f"{row.share_min:.2%}/{row.share_median:.2%}/{row.share_max:.2%}"


def _growth_text(row: TemplateRow) -> str:
    return ", ".join(f"{g.host} {g.per_hour:+.1f}/h" for g in row.growth) or "-"


def render_table(fleet: FleetReport, top: int | None = None) -> str:
    """A terminal's table: the summary, the top templates, the failures (or what --find found)."""
    esc = terminal_escape
    lines = [f"fleet: {summary_line(fleet)}"]
    if fleet.out:
        lines.append(f"reports: {esc(fleet.out)}")
    if fleet.find is not None:
        lines.append(f"find {esc(fleet.find)!s}: {len(fleet.found)} templates")
        for row in fleet.found:
            lines.append("")
            lines.append(
                f"{esc(row.cache)}  {esc(row.template)}  ({row.dumps} dumps, "
                f"{row.objects} objects, growth {esc(_growth_text(row))})"
            )
            lines.append(f"  {'time (UTC)':19}  {'host':16} {'objects':>9} {'share':>8}  dump")
            for c in row.per_dump:
                lines.append(
                    f"  {when(c.time):19}  {esc(c.host or '-'):16} {c.objects:>9} "
                    f"{c.share:>8.2%}  {esc(c.path)}"
                )
    else:
        rows = fleet.templates[: TABLE_TOP if top is None else top]
        lines.append("")
        lines.append(
            f"{'objects':>9} {'dumps':>5}  {'share min/med/max':24} {'first seen':19}  "
            f"{'last seen':19}  {'cache':14} template"
        )
        for row in rows:
            lines.append(
                f"{row.objects:>9} {row.dumps:>5}  {_shares(row):24} "
                f"{when(row.first_seen):19}  {when(row.last_seen):19}  "
                f"{esc(row.cache):14} {esc(row.template)}"
            )
            hosts = ", ".join(esc(h) for h in row.hosts) or "-"
            lines.append(f"{'':16}hosts: {hosts}; growth: {esc(_growth_text(row))}")
        if len(fleet.templates) > len(rows):
            lines.append(f"({len(fleet.templates) - len(rows)} more templates: --top, or JSON)")
    failed = fleet.failed
    if failed:
        lines.append("")
        lines.append(f"failed ({len(failed)}):")
        for dump in failed:
            lines.append(f"  {esc(dump.path)}: {esc(dump.error or '')} (exit {dump.exit_code})")
    return "\n".join(lines) + "\n"


CSV_HEADER = [
    "cache",
    "template",
    "dumps",
    "objects",
    "share_min",
    "share_median",
    "share_max",
    "first_seen",
    "last_seen",
    "hosts",
    "growth_per_hour",
]


def render_csv(fleet: FleetReport, top: int | None = None) -> str:
    """One line per template (with --find: per template and dump that carries it)."""
    if fleet.find is not None:
        out = [csv_line(["cache", "template", "time", "host", "objects", "share", "dump"])]
        for row in fleet.found:
            for c in row.per_dump:
                out.append(
                    csv_line(
                        [
                            csv_cell(row.cache),
                            csv_cell(row.template),
                            "" if c.time is None else c.time,
                            csv_cell(c.host or ""),
                            c.objects,
                            c.share,
                            csv_cell(c.path),
                        ]
                    )
                )
        return "".join(out)
    out = [csv_line(list(CSV_HEADER))]
    for row in fleet.templates[:top]:
        growth = ";".join(f"{g.host}={g.per_hour}" for g in row.growth)
        out.append(
            csv_line(
                [
                    csv_cell(row.cache),
                    csv_cell(row.template),
                    row.dumps,
                    row.objects,
                    row.share_min,
                    row.share_median,
                    row.share_max,
                    "" if row.first_seen is None else row.first_seen,
                    "" if row.last_seen is None else row.last_seen,
                    csv_cell(";".join(row.hosts)),
                    csv_cell(growth),
                ]
            )
        )
    return "".join(out)


def render_markdown(fleet: FleetReport, top: int | None = None) -> str:
    """A Markdown summary: the top templates and the failures."""
    md = markdown_escape
    lines = ["# dumpminer fleet", "", summary_line(fleet) + ".", ""]
    rows = (
        fleet.found
        if fleet.find is not None
        else fleet.templates[: TABLE_TOP if top is None else top]
    )
    if fleet.find is not None:
        lines += [f"Templates that `--find` {md(fleet.find)} names: {len(rows)}.", ""]
    lines += [
        "| objects | dumps | share min / median / max | first seen | last seen | hosts | growth "
        "| cache | template |",
        "|---:|---:|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.objects} | {row.dumps} | {_shares(row)} | {when(row.first_seen)} | "
            f"{when(row.last_seen)} | {md(', '.join(row.hosts))} | {md(_growth_text(row))} | "
            f"{md(row.cache)} | {md(row.template)} |"
        )
    if fleet.failed:
        lines += ["", "## Failed", "", "| dump | exit | error |", "|---|---:|---|"]
        for dump in fleet.failed:
            lines.append(f"| {md(dump.path)} | {dump.exit_code} | {md(dump.error or '')} |")
    return "\n".join(lines) + "\n"


def render_fleet(fleet: FleetReport, fmt: str, top: int | None = None) -> str:
    """*fleet* in *fmt*, one of :data:`FLEET_FORMATS`."""
    if fmt == "json":
        return json_text(to_fleet_dict(fleet, top)) + "\n"
    if fmt == "html":
        from dumpminer.fleet.html import render_fleet_html

        return render_fleet_html(fleet, top)
    renderers = {"table": render_table, "csv": render_csv, "markdown": render_markdown}
    if fmt not in renderers:
        raise ValueError(f"unknown fleet format {fmt!r}: use one of {', '.join(FLEET_FORMATS)}")
    return renderers[fmt](fleet, top)
