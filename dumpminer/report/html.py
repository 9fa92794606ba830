"""
The HTML report: one self-contained page a person opens in a browser.

Rendered with Jinja2 templates (``dumpminer/report/templates``) with autoescaping
on, and every text that came from the dump passed through
:func:`~dumpminer.report.render.terminal_escape` first, so a fragment holding
``<script>``, quotes or control bytes is shown as text. The page has no
script, no external style sheet, font or image: the bar chart is inline SVG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jinja2

from dumpminer.clustering.cluster import Cluster
from dumpminer.dump.dumptime import iso_utc
from dumpminer.report.callsites import shape_allocated_by
from dumpminer.report.escape import terminal_escape
from dumpminer.report.json import to_json_dict
from dumpminer.report.model import HTML_EXAMPLES, HTML_OBJECT_BYTES, Report, leading_shape_group
from dumpminer.report.text import (
    cluster_allocated_by,
    group_points_to,
    leading_line,
    points_to,
    sampled_note,
    site_lines,
)

#: Bars in a chart.
CHART_BARS = 15
#: Clusters listed when --top is not given (a page, not a data dump).
HTML_TOP = 50
#: Bytes per line of an object dump.
LINE_BYTES = 16


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dumpminer.report", "templates"),
        autoescape=True,
        # Reports read from JSON files may lack optional fields: those render empty.
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # Dump bytes: no control character reaches the page, whatever escaping follows.
    env.filters["shown"] = lambda value: terminal_escape(str(value))
    # Dump times: ISO 8601 in UTC beside the Unix seconds.
    env.filters["utc"] = lambda value: iso_utc(value) or "?"
    return env


@dataclass
class Bar:
    """One bar of a chart: a label, a value and its share of the longest bar."""

    label: str
    value: int
    width: float
    negative: bool = False


def chart(labels_values: list[tuple[str, int]]) -> list[Bar]:
    """Bars scaled to the largest absolute value (widths 0 to 1)."""
    largest = max((abs(v) for _, v in labels_values), default=0) or 1
    return [Bar(label, value, abs(value) / largest, value < 0) for label, value in labels_values]


@dataclass
class DumpLine:
    """One line of an ``rd -a``-style dump: address, hex and ASCII cells."""

    address: str
    #: (text, highlighted) per byte.
    hex_cells: list[tuple[str, bool]]
    ascii_cells: list[tuple[str, bool]]


def printable(byte: int) -> bool:
    return 0x20 <= byte <= 0x7E


def fragment_spans(data: bytes, texts: set[bytes], min_length: int) -> list[tuple[int, int]]:
    """Where in *data* a whole printable run is one of *texts*: (start, end) pairs."""
    spans = []
    start = None
    for i, byte in enumerate([*data, 0]):
        if i < len(data) and printable(byte):
            if start is None:
                start = i
            continue
        if start is not None and i - start >= min_length and data[start:i] in texts:
            spans.append((start, i))
        start = None
    return spans


def object_dump(address: int, data: bytes, spans: list[tuple[int, int]]) -> list[DumpLine]:
    """*data* at *address* as lines of :data:`LINE_BYTES`, with *spans* highlighted."""
    marked: set[int] = set()
    for start, end in spans:
        marked.update(range(start, end))
    lines = []
    for base in range(0, len(data), LINE_BYTES):
        chunk = data[base : base + LINE_BYTES]
        hex_cells = [(f"{b:02x}", base + i in marked) for i, b in enumerate(chunk)]
        ascii_cells = [
            (chr(b) if printable(b) else ".", base + i in marked) for i, b in enumerate(chunk)
        ]
        lines.append(DumpLine(f"{address + base:016x}", hex_cells, ascii_cells))
    return lines


def _cluster_dump(report: Report, cluster: Cluster) -> list[DumpLine] | None:
    if not cluster.examples or cluster.examples[0] not in report.example_bytes:
        return None
    address = cluster.examples[0]
    data = report.example_bytes[address]
    texts = {m.text for m in cluster.members} | {cluster.template}
    spans = fragment_spans(data, texts, report.scan.min_length or 1)
    if not spans and cluster.typical_offset is not None:
        offset = cluster.typical_offset
        end = offset
        while end < len(data) and printable(data[end]):
            end += 1
        spans = [(offset, end)]
    return object_dump(address, data, spans)


def _report_context(report: Report, top: int | None) -> dict[str, Any]:
    doc = to_json_dict(report, top)
    clusters = report.clusters[:top]
    leader = leading_shape_group(report)
    bars = [(e["template"], int(e["objects"])) for e in doc["clusters"][:CHART_BARS]]
    if leader is not None and top != 0:
        # What leads the cache leads the chart too, named by its shape.
        statics = [w for w in dict.fromkeys(leader.shape) if w.startswith("&")]
        label = f"S1 string-less {' '.join(statics) or leader.shape_text()}"
        bars = [(label, leader.objects), *bars]
        bars = bars[:CHART_BARS]
    return {
        "doc": doc,
        "leading": leading_line(report),
        "rows": [
            {
                "rank": rank,
                "json": entry,
                "share": f"{100 * report.share(cluster.objects):.2f}%",
                "offsets": sorted(cluster.offsets.items(), key=lambda kv: (-kv[1], kv[0]))[:5],
                "dump": _cluster_dump(report, cluster) if rank <= HTML_EXAMPLES else None,
                "look": entry["look"],
                "points_to": points_to(report, rank - 1),
                "allocated_by": cluster_allocated_by(report, rank - 1),
            }
            for rank, (cluster, entry) in enumerate(zip(clusters, doc["clusters"], strict=True), 1)
        ],
        "shapes": _shape_rows(report, top),
        "call_sites": site_lines(report),
        "sampled_note": sampled_note(report),
        "bars": chart(bars),
    }


def _shape_rows(report: Report, top: int | None) -> list[dict[str, Any]]:
    """The string-less shape groups as the page lists them."""
    shapes = report.shapes
    if shapes is None:
        return []
    return [
        {
            "rank": rank,
            "objects": g.objects,
            "share": f"{100 * report.share(g.objects):.2f}%",
            "shape": g.shape_text(),
            "examples": [f"{a:#x}" for a in g.examples],
            "points_to": group_points_to(report, rank - 1),
            "allocated_by": shape_allocated_by(g),
        }
        for rank, g in enumerate(shapes.groups[:top], 1)
    ]


def render_html(reports: list[Report], top: int | None = None) -> str:
    """The mine report(s) of one dump as one self-contained HTML page."""
    top = HTML_TOP if top is None else top
    env = environment()
    return env.get_template("mine.html.j2").render(
        reports=[_report_context(r, top) for r in reports],
        limits={"examples": HTML_EXAMPLES, "bytes": HTML_OBJECT_BYTES},
    )
