"""
The fragment frequency report: its data, and its renderings.

One :class:`Report` renders as a terminal table, JSON (the
``dumpminer.report/1`` contract, see docs/report-format.md), CSV and
Markdown. Fragment texts come from an untrusted dump, so each rendering
escapes them for where they go: JSON escaping, CSV cells that cannot start a
formula, Markdown with its punctuation escaped, and a terminal that never
receives a control character. The report file is written atomically.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any

from dumpminer.cluster import MEMBERS_SHOWN, Cluster, Slot
from dumpminer.errors import OutputError
from dumpminer.fragments import Fragment
from dumpminer.sample import SampledSlabs, interval

SCHEMA = "dumpminer.report/1"
MANY_SCHEMA = "dumpminer.reports/1"
FORMATS = ("table", "json", "csv", "markdown")
#: Rows in a terminal table when --top is not given.
TABLE_TOP = 25


@dataclass
class Report:
    """Everything one mining run found, ready to render."""

    dump: dict[str, Any]
    cache: dict[str, Any]
    scan: dict[str, Any]
    fragments: list[Fragment]
    clusters: list[Cluster]
    partial: bool = False
    progress: dict[str, Any] = field(default_factory=dict)
    #: With --sample: what was drawn (see :mod:`dumpminer.sample`); else None.
    sample: dict[str, Any] | None = None
    #: SIGINT/SIGTERM that arrived after the walk, held until the report was
    #: whole; the CLI exits 130/143 for them after writing it.
    late_signals: list[int] = field(default_factory=list)
    #: For --format html: object address -> its bytes, for the top clusters'
    #: first examples (see :func:`attach_example_bytes`).
    example_bytes: dict[int, bytes] = field(default_factory=dict)

    def share(self, objects: int) -> float:
        """*objects* (as counted) as a fraction of the cache's allocated objects."""
        if self.sample is not None:
            sampled = self.sample["objects_sampled"]
            return objects / sampled if sampled else 0.0
        allocated = self.cache.get("allocated") or 0
        return objects / allocated if allocated else 0.0

    def counts(self, item: Fragment | Cluster) -> dict[str, Any]:
        """
        The count fields of a fragment or cluster: as counted, or with
        --sample scaled to the whole cache, with the sampled count and a 95%
        interval for ``objects`` beside them (:func:`dumpminer.sample.interval`).
        """
        if self.sample is None:
            return {
                "objects": item.objects,
                "occurrences": item.occurrences,
                "in_context": item.in_context,
            }
        sample = self.sample
        sampled, population = sample["objects_sampled"], sample["population"]
        scale = population / sampled if sampled else 0.0
        low, high = interval(
            item.objects,
            item.slab_square,
            item.slab_cross,
            SampledSlabs(
                # Slabs mined: fewer than drawn if some were unreadable.
                slabs=sample["slabs_read"],
                slabs_total=sample["slabs_total"],
                objects=sampled,
                objects_square=sample["slab_objects_square"],
                population=population,
            ),
        )
        return {
            "objects": round(item.objects * scale),
            "occurrences": round(item.occurrences * scale),
            "in_context": round(item.in_context * scale),
            "objects_ci95": [low, high],
            "sampled_objects": item.objects,
        }


def _text(data: bytes) -> str:
    """Fragment bytes as a str; they are printable ASCII by construction."""
    return data.decode("latin-1")


def look_commands(address: int, object_size: int) -> dict[str, str]:
    """The crash and drgn commands that show the object at *address*."""
    return {
        "crash": f"rd -a {address:#x} {object_size}",
        "drgn": f"identify_address(prog, {address:#x})",
    }


def _fragment_json(report: Report, fragment: Fragment) -> dict[str, Any]:
    return {
        "text": _text(fragment.text),
        **report.counts(fragment),
        "offsets": {str(k): v for k, v in sorted(fragment.offsets.items())},
        "examples": [f"{a:#x}" for a in fragment.examples],
    }


def _slot_json(slot: Slot) -> dict[str, Any]:
    return {
        "kind": slot.kind,
        "distinct": slot.distinct,
        "distinct_exact": slot.distinct_exact,
        "top": [{"value": _text(value), "objects": objects} for value, objects in slot.top],
    }


def _cluster_json(report: Report, cluster: Cluster, object_size: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "template": _text(cluster.template),
        **report.counts(cluster),
        "typical_offset": cluster.typical_offset,
        "distinct_members": cluster.distinct_members,
        "distinct_members_exact": cluster.members_exact,
        "allocator_fill": cluster.fill is not None,
        "fill_byte": None if cluster.fill is None else f"{cluster.fill:#04x}",
        "slots": [_slot_json(slot) for slot in cluster.slots],
        "members": [
            {"text": _text(m.text), **report.counts(m)} for m in cluster.members[:MEMBERS_SHOWN]
        ],
        "examples": [f"{a:#x}" for a in cluster.examples],
        # Clusters seen only in context windows have no object to show.
        "look": look_commands(cluster.examples[0], object_size) if cluster.examples else None,
    }
    return entry


def to_json_dict(report: Report, top: int | None = None) -> dict[str, Any]:
    """The ``dumpminer.report/1`` document; *top* limits both lists."""
    object_size = int(report.cache.get("object_size") or 0)
    return {
        "schema": SCHEMA,
        "partial": report.partial,
        "progress": report.progress,
        "dump": report.dump,
        "cache": report.cache,
        "scan": report.scan,
        "sample": report.sample,
        "totals": {
            "fragments": len(report.fragments),
            "clusters": len(report.clusters),
            # Clusters hold every count, folded members too (see scan.complete).
            "objects": sum(c.objects for c in report.clusters),
            "occurrences": sum(c.occurrences for c in report.clusters),
            "in_context": sum(c.in_context for c in report.clusters),
        },
        "fragments": [_fragment_json(report, f) for f in report.fragments[:top]],
        "clusters": [_cluster_json(report, c, object_size) for c in report.clusters[:top]],
    }


def render_json(report: Report, top: int | None = None) -> str:
    """JSON, ASCII only, keys in a fixed order."""
    return json.dumps(to_json_dict(report, top), indent=2, ensure_ascii=True) + "\n"


def csv_cell(value: object) -> str:
    """
    A CSV cell that a spreadsheet will not run: text starting with ``=``,
    ``+``, ``-``, ``@``, tab or carriage return gets a leading quote (control
    characters are shown as ``\\xNN`` first, so only the first four remain).
    """
    text = terminal_escape(str(value))
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text


def render_csv(report: Report, top: int | None = None) -> str:
    """One row per cluster, most objects first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["cache", "rank", "template", "objects", "share", "occurrences", "in_context",
         "typical_offset", "distinct_members", "examples"]
    )  # fmt: skip
    for rank, c in enumerate(report.clusters[:top], 1):
        counts = report.counts(c)
        writer.writerow(
            [
                csv_cell(report.cache["name"]),
                rank,
                csv_cell(_text(c.template)),
                counts["objects"],
                f"{report.share(c.objects):.6f}",
                counts["occurrences"],
                counts["in_context"],
                "" if c.typical_offset is None else c.typical_offset,
                len(c.members),
                " ".join(f"{a:#x}" for a in c.examples),
            ]
        )
    return out.getvalue()


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&\"'=:])")


def markdown_escape(text: str) -> str:
    """Backslash-escape Markdown punctuation (CommonMark allows any)."""
    return _MD_SPECIAL.sub(r"\\\1", terminal_escape(text))


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def terminal_escape(text: str) -> str:
    """Show every byte outside printable ASCII as ``\\xNN``: no control characters."""
    # surrogateescape: paths from the command line may hold undecodable bytes.
    return _UNPRINTABLE.sub(
        lambda m: "".join(f"\\x{b:02x}" for b in m.group().encode("utf-8", "surrogateescape")),
        text,
    )


def _header_lines(report: Report) -> list[str]:
    cache, scan, dump = report.cache, report.scan, report.dump
    lines = [
        f"dump {dump.get('path')} ({dump.get('format')}, {dump.get('osrelease')})",
        f"cache {cache['name']} -> {', '.join(cache['caches'])}: object size "
        f"{cache['object_size']}, {cache['allocated']} allocated of {cache['total']}",
        f"scanned {scan['objects_scanned']} objects in {scan['slabs']} slabs, "
        f"{scan['seconds']:.2f} s; faults {scan['faults']}, "
        f"corrupt slabs {scan['corrupt_slabs']}",
    ]
    if report.sample:
        sample = report.sample
        lines.append(
            f"SAMPLED: {sample['slabs_sampled']} of {sample['slabs_total']} slabs "
            f"(seed {sample['seed']}); counts scaled to the cache, ~ marks estimates"
        )
    lines += _bound_lines(scan)
    if report.partial:
        progress = report.progress
        lines.append(
            f"PARTIAL: interrupted after {progress.get('slabs_walked')} of "
            f"{progress.get('slabs_found')} slabs"
        )
    return [terminal_escape(line) for line in lines]


def _bound_lines(scan: dict[str, Any]) -> list[str]:
    """What the memory bound (--max-fragments) did, when it did anything."""
    lines = []
    if not scan.get("exact", True):
        lines.append(
            f"INEXACT: {scan.get('dropped_fragments')} rare fragments fitting no template were "
            f"dropped (--max-fragments {scan.get('max_fragments')}); counts may be short by "
            f"up to {scan.get('error_bound')} per dropped member"
        )
    if scan.get("folded_fragments"):
        lines.append(
            f"folded: {scan['folded_fragments']} member fragments counted into "
            f"{scan.get('folded_templates')} templates only (--max-fragments "
            f"{scan.get('max_fragments')}); template counts "
            + ("exact" if scan.get("exact", True) else "as above")
        )
    return lines


def _shown_template(template: bytes) -> str:
    """A template for the table: quoted when spaces at its ends would hide."""
    text = terminal_escape(_text(template))
    return f'"{text}"' if text != text.strip() else text


def render_table(report: Report, top: int | None = None) -> str:
    """The top clusters as a terminal table, then how to look closer."""
    top = TABLE_TOP if top is None else top
    rows = [("#", "objects", "share", "context", "offset", "example", "template")]
    approx = "~" if report.sample else ""
    for rank, c in enumerate(report.clusters[:top], 1):
        counts = report.counts(c)
        rows.append(
            (
                str(rank),
                f"{approx}{counts['objects']}",
                f"{100 * report.share(c.objects):.2f}%",
                f"{approx}{counts['in_context']}",
                "-" if c.typical_offset is None else f"+{c.typical_offset:#x}",
                f"{c.examples[0]:#x}" if c.examples else "-",
                _shown_template(c.template),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [*_header_lines(report), ""]
    for row in rows:
        cells = [
            cell.ljust(w) if i in (0, 5) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row[:-1], widths, strict=True))
        ]
        lines.append("  ".join([*cells, row[-1]]))
    first = next((c for c in report.clusters if c.examples), None)
    if first is not None:
        look = look_commands(first.examples[0], int(report.cache["object_size"]))
        lines += ["", f"look closer:  crash> {look['crash']}", f"              >>> {look['drgn']}"]
    return "\n".join(lines) + "\n"


def render_markdown(report: Report, top: int | None = None) -> str:
    """The top clusters as a Markdown table."""
    lines = [f"# dumpminer: {markdown_escape(str(report.cache['name']))}", ""]
    lines += [markdown_escape(line) + "  " for line in _header_lines(report)]
    lines += [
        "",
        "| # | template | objects | share | in context | offset | examples |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for rank, c in enumerate(report.clusters[:top], 1):
        offset = "" if c.typical_offset is None else f"{c.typical_offset:#x}"
        examples = ", ".join(f"`{a:#x}`" for a in c.examples)
        lines.append(
            f"| {rank} | {markdown_escape(_text(c.template))} | "
            f"{report.counts(c)['objects']} | "
            f"{100 * report.share(c.objects):.2f}% | "
            f"{report.counts(c)['in_context']} | "
            f"{offset} | {examples} |"
        )
    return "\n".join(lines) + "\n"


#: Clusters whose first example object the HTML report shows byte by byte.
HTML_EXAMPLES = 10
#: Most bytes of one example object read for the HTML report.
HTML_OBJECT_BYTES = 512


def attach_example_bytes(report: Report, prog: Any, clusters: int = HTML_EXAMPLES) -> None:
    """
    Read the first example object of the top *clusters* clusters from *prog*
    (at most :data:`HTML_OBJECT_BYTES` each) into ``report.example_bytes``,
    for the HTML report's ``rd -a``-style dumps. Unreadable ones are left out.
    """
    size = min(int(report.cache.get("object_size") or 0), HTML_OBJECT_BYTES)
    for cluster in report.clusters[:clusters]:
        if not cluster.examples or size <= 0:
            continue
        address = cluster.examples[0]
        with contextlib.suppress(Exception):
            report.example_bytes[address] = prog.read(address, size)


def render(report: Report, fmt: str, top: int | None = None) -> str:
    """Render *report* in *fmt*, one of :data:`FORMATS` or ``html``."""
    if fmt == "html":
        from dumpminer.html import render_html

        return render_html([report], top)
    renderers = {
        "table": render_table,
        "json": render_json,
        "csv": render_csv,
        "markdown": render_markdown,
    }
    return renderers[fmt](report, top)


def render_many(reports: list[Report], fmt: str, top: int | None = None) -> str:
    """
    Render the reports of several caches as one document: JSON wraps them in
    ``{"schema": "dumpminer.reports/1", "reports": [...]}``, CSV keeps one
    header, the others follow each other.
    """
    if fmt == "html":
        from dumpminer.html import render_html

        return render_html(reports, top)
    if fmt == "json":
        doc = {"schema": MANY_SCHEMA, "reports": [to_json_dict(r, top) for r in reports]}
        return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"
    parts = [render(r, fmt, top) for r in reports]
    if fmt == "csv":
        return parts[0] + "".join(p.split("\n", 1)[1] for p in parts[1:])
    return "\n".join(parts)


def write_atomically(path: str, text: str) -> None:
    """
    Write *text* to *path* through a temporary file in the same directory and
    a rename, so that *path* is either the old file or the whole new one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dumpminer-", dir=directory)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror}") from e
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        # Also on KeyboardInterrupt: never leave the temporary file behind.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {path}: {e.strerror}") from e
        raise
