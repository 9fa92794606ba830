"""
The fragment frequency report: its data, and its renderings.

One :class:`Report` renders as a terminal table, JSON (the
``dumpminer.report/1`` contract, see docs/report-format.md), CSV and
Markdown. Fragment texts come from an untrusted dump, so each rendering
escapes them for where they go: JSON escaping, CSV cells that cannot start a
formula (with the raw bytes beside them, in hex), Markdown with the
characters that would change the table escaped, and a terminal that never
receives a control character. Writing the report is :mod:`dumpminer.output`.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dumpminer.attribution import SAMPLE_OBJECTS, Attribution
from dumpminer.callsites import (
    CallSiteReport,
    allocated_by,
    call_site_lines,
    call_sites_json,
    cluster_call_sites_json,
    shape_allocated_by,
)
from dumpminer.cluster import MEMBERS_SHOWN, Cluster, Slot
from dumpminer.fragments import Fragment
from dumpminer.reportdata import CacheFacts, DumpFacts, Progress, SampleFacts, ScanFacts
from dumpminer.sampling import interval
from dumpminer.shapes import ShapeGroup, ShapeSummary

SCHEMA = "dumpminer.report/1"
MANY_SCHEMA = "dumpminer.reports/1"
FORMATS = ("table", "json", "csv", "markdown")
#: Rows in a terminal table when --top is not given.
TABLE_TOP = 25


@dataclass(frozen=True)
class Report:
    """Everything one mining run found, ready to render."""

    dump: DumpFacts
    cache: CacheFacts
    scan: ScanFacts
    fragments: list[Fragment]
    clusters: list[Cluster]
    #: What cut the report short, if anything (see :attr:`partial`).
    progress: Progress = field(default_factory=Progress)
    #: With --sample: what was drawn (see :mod:`dumpminer.sampling`); else None.
    sample: SampleFacts | None = None
    #: SIGINT/SIGTERM that arrived after the walk, held until the report was
    #: whole; the CLI exits 130/143 for them after writing it.
    late_signals: tuple[int, ...] = ()
    #: For --format html: object address -> its bytes, for the top clusters'
    #: first examples (see :func:`attach_example_bytes`).
    example_bytes: Mapping[int, bytes] = field(default_factory=dict)
    #: Pointer attribution of the top clusters, in cluster order (fewer than
    #: the clusters: only the top ones are attributed); empty when off.
    attribution: tuple[Attribution, ...] = ()
    #: The string-less objects' shape groups; None when attribution is off.
    shapes: ShapeSummary | None = None
    #: Seconds spent attributing after the walk.
    attribution_seconds: float = 0.0
    #: Allocation call sites, when the cache keeps alloc tracks (slub_debug=U).
    call_sites: CallSiteReport | None = None

    @property
    def partial(self) -> bool:
        """Whether a signal or a dump cut short stopped the walk early."""
        return self.progress.partial

    def share(self, objects: int) -> float:
        """*objects* (as counted) as a fraction of the cache's allocated objects."""
        if self.sample is not None:
            sampled = self.sample.objects_sampled
            return objects / sampled if sampled else 0.0
        allocated = self.cache.allocated
        return objects / allocated if allocated else 0.0

    def counts(self, item: Fragment | Cluster) -> dict[str, Any]:
        """
        The count fields of a fragment or cluster: as counted, or with
        --sample scaled to the whole cache, with the sampled count and a 95%
        interval for ``objects`` beside them (:func:`dumpminer.sampling.interval`).
        """
        if self.sample is None:
            return {
                "objects": item.objects,
                "occurrences": item.occurrences,
                "in_context": item.in_context,
            }
        sample = self.sample
        sampled, population = sample.objects_sampled, sample.population
        scale = population / sampled if sampled else 0.0
        low, high = interval(item.objects, item.slab_square, item.slab_cross, sample.drawn())
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


def look_commands(
    address: int, object_size: int, before: int = 0, after: int = 0
) -> dict[str, Any]:
    """
    The crash and drgn commands that show the object at *address*: JSON's
    ``look``, the same commands as the table's follow-ups.
    """
    crash = [
        line.removeprefix("crash> ")
        for line in follow_up_commands(address, object_size, before, after)
        if line.startswith("crash> ")
    ]
    return {
        "crash": crash[0],
        "drgn": f"identify_address(prog, {address:#x})",
        "crash_more": crash[1:],
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


def _attribution_of(report: Report, rank: int) -> Attribution | None:
    """The attribution of the cluster at index *rank*, if it was attributed."""
    return report.attribution[rank] if rank < len(report.attribution) else None


def _cluster_json(
    report: Report, cluster: Cluster, object_size: int, rank: int = 0
) -> dict[str, Any]:
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
        "look": look_commands(
            cluster.examples[0],
            object_size,
            report.scan.context_before,
            report.scan.context_after,
        )
        if cluster.examples
        else None,
    }
    attribution = _attribution_of(report, rank)
    entry["attribution"] = None if attribution is None else attribution.to_json()
    entry["allocated_by"] = cluster_call_sites_json(report.call_sites, rank)
    return entry


def to_json_dict(report: Report, top: int | None = None) -> dict[str, Any]:
    """The ``dumpminer.report/1`` document; *top* limits both lists."""
    object_size = report.cache.object_size
    return {
        "schema": SCHEMA,
        "partial": report.partial,
        "progress": report.progress.to_json(),
        "dump": report.dump.to_json(),
        "cache": report.cache.to_json(),
        "scan": report.scan.to_json(),
        "sample": None if report.sample is None else report.sample.to_json(),
        "totals": {
            "fragments": len(report.fragments),
            "clusters": len(report.clusters),
            # Clusters hold every count, folded members too (see scan.complete).
            "objects": sum(c.objects for c in report.clusters),
            "occurrences": sum(c.occurrences for c in report.clusters),
            "in_context": sum(c.in_context for c in report.clusters),
        },
        "fragments": [_fragment_json(report, f) for f in report.fragments[:top]],
        "clusters": [
            _cluster_json(report, c, object_size, rank)
            for rank, c in enumerate(report.clusters[:top])
        ],
        "attribution": None
        if report.shapes is None
        else {
            "clusters": len(report.attribution),
            "sample_objects": SAMPLE_OBJECTS,
        },
        "string_less": None if report.shapes is None else report.shapes.to_json(report.share),
        "call_sites": None
        if report.call_sites is None
        else call_sites_json(report.call_sites, report.sample is not None),
    }


def render_json(report: Report, top: int | None = None) -> str:
    """JSON, ASCII only, keys in a fixed order."""
    return json.dumps(to_json_dict(report, top), indent=2, ensure_ascii=True) + "\n"


def csv_cell(value: object) -> str:
    """
    A CSV cell that a spreadsheet will not run, in the form OWASP gives for
    CSV injection: text starting with ``=``, ``+``, ``-``, ``@``, tab or
    carriage return gets a leading ``'`` (control characters are shown as
    ``\\xNN`` first, so only the first four remain).
    """
    text = terminal_escape(str(value))
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text


def csv_line(cells: list[object]) -> str:
    """
    One CSV record (RFC 4180): a cell is quoted when it holds a comma, a
    quote or a line break, and also when it starts or ends with a space,
    which readers that trim cells would otherwise lose.
    """
    out = []
    for cell in cells:
        text = str(cell)
        if any(c in text for c in ',"\r\n') or text != text.strip(" "):
            text = '"' + text.replace('"', '""') + '"'
        out.append(text)
    return ",".join(out) + "\n"


#: The columns of ``--format csv`` (docs/report-format.md says what each holds).
CSV_COLUMNS = [
    "cache", "rank", "template", "objects", "share", "occurrences", "in_context",
    "typical_offset", "distinct_members", "examples", "objects_ci95_low", "objects_ci95_high",
    "template_hex", "counts_exact", "distinct_members_exact", "allocator_fill",
    "points_to",
    "allocated_by", "allocated_by_objects",
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
                    csv_cell(_text(c.template)),
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
                    csv_cell(_points_to(report, rank - 1)),
                    *_csv_allocated_by(report, rank - 1),
                ]
            )
        )
    return "".join(lines)


def _points_to(report: Report, rank: int) -> str:
    """The ``points to`` text of the cluster at index *rank*; empty if not attributed."""
    attribution = _attribution_of(report, rank)
    return "" if attribution is None else attribution.points_to_text()


#: What Markdown (CommonMark with GitHub's tables, strikethrough and math)
#: would read as markup inside a table cell or a line of text: emphasis,
#: code, links, HTML and entities, cell borders, the backslash itself. The
#: text never starts a line, so block markers (``#``, ``-``, ``1.``) are safe.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<|&~$])")


def markdown_escape(text: str) -> str:
    """Backslash-escape the characters Markdown would read as markup, and only those."""
    return _MD_SPECIAL.sub(r"\\\1", terminal_escape(text))


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def terminal_escape(text: str) -> str:
    """Show every byte outside printable ASCII as ``\\xNN``: no control characters."""
    # surrogateescape: paths from the command line may hold undecodable bytes.
    return _UNPRINTABLE.sub(
        lambda m: "".join(f"\\x{b:02x}" for b in m.group().encode("utf-8", "surrogateescape")),
        text,
    )


def _dump_line(dump: DumpFacts) -> str:
    """What was mined: the dump file, or a program opened by the caller."""
    release = dump.osrelease or "of unknown release"
    if dump.path is None:
        # mine(prog, ...) without a Dump: a drgn program the caller opened.
        return f"kernel {release}, from a drgn program (no dump file given)"
    source = ", types from BTF+kallsyms" if dump.debuginfo == "btf+kallsyms" else ""
    return f"dump {dump.path} ({dump.format or 'unknown format'}, {release}{source})"


def _header_lines(report: Report) -> list[str]:
    cache, scan = report.cache, report.scan
    lines = [
        _dump_line(report.dump),
        f"cache {cache.name} -> {', '.join(cache.caches)}: object size "
        f"{cache.object_size}, {cache.allocated} allocated of {cache.total}",
        f"scanned {scan.objects_scanned} objects in {scan.slabs} slabs, "
        f"{scan.seconds:.2f} s; faults {scan.faults}, "
        f"corrupt slabs {scan.corrupt_slabs}",
    ]
    if report.sample is not None:
        sample = report.sample
        lines.append(
            f"SAMPLED: {sample.slabs_sampled} of {sample.slabs_total} slabs "
            f"(seed {sample.seed}); counts scaled to the cache, ~ marks estimates, "
            "with their 95% interval"
        )
    lines += _pointer_lines(scan)
    lines += _bound_lines(scan)
    progress = report.progress
    if progress.incomplete is not None:
        lines.append(f"PARTIAL: {progress.incomplete.why}")
    elif progress.interrupted is not None:
        lines.append(
            f"PARTIAL: interrupted after {progress.interrupted.slabs_walked} of "
            f"{progress.interrupted.slabs_found} slabs"
        )
    leader = leading_shape_group(report)
    if leader is not None:
        largest = report.clusters[0].objects if report.clusters else 0
        lines.append(
            f"LEADING: string-less shape group S1, {leader.objects} objects "
            f"({100 * report.share(leader.objects):.2f}%), more than the largest string "
            f"cluster ({largest}): {leader.shape_text()}"
        )
    return [terminal_escape(line) for line in lines]


def leading_shape_group(report: Report) -> ShapeGroup | None:
    """
    The largest string-less shape group when it holds more objects than the
    largest string cluster, else None. A leak whose objects hold only
    pointers is listed after the clusters; when it is the biggest thing in
    the cache, the header says so, so that it is not read past. (Both counts
    are as walked: with --sample, raw sample counts on both sides.)
    """
    shapes = report.shapes
    if shapes is None or not shapes.groups:
        return None
    group = shapes.groups[0]
    largest = report.clusters[0].objects if report.clusters else 0
    return group if group.objects > largest else None


def _pointer_lines(scan: ScanFacts) -> list[str]:
    """Why kernel pointers were blanked, when the probe for pointer noise decided it."""
    noise = scan.pointer_noise
    if noise is None or not noise.masked:
        return []
    return [
        f"POINTERS BLANKED: their bytes would make ~{noise.runs_estimated} distinct runs "
        f"(probe of {noise.slabs_probed} slabs), over --max-fragments; "
        "--keep-pointers counts them"
    ]


def _bound_lines(scan: ScanFacts) -> list[str]:
    """What the memory bound (--max-fragments) did, when it did anything."""
    lines = []
    if not scan.exact:
        lines.append(
            f"INEXACT: {scan.dropped_fragments} rare fragments fitting no template were "
            f"dropped (--max-fragments {scan.max_fragments}); counts may be short by "
            f"up to {scan.error_bound} per dropped member"
        )
    if scan.folded_fragments:
        lines.append(
            f"folded: {scan.folded_fragments} member fragments counted into "
            f"{scan.folded_templates} templates only (--max-fragments "
            f"{scan.max_fragments}); template counts " + ("exact" if scan.exact else "as above")
        )
    return lines


def _shown_template(template: bytes) -> str:
    """A template for the table: quoted when spaces at its ends would hide."""
    text = terminal_escape(_text(template))
    return f'"{text}"' if text != text.strip() else text


def _interval(report: Report, item: Fragment | Cluster) -> str:
    """The 95% interval of a sampled count, as ``LOW-HIGH``; empty when exact."""
    bounds = report.counts(item).get("objects_ci95")
    return "" if bounds is None else f"{bounds[0]}-{bounds[1]}"


def follow_up_commands(
    address: int, object_size: int, before: int = 0, after: int = 0
) -> list[str]:
    """
    What to type next about the object at *address*, crash first: its words
    with the context windows (``rd -64``, where pointers and counters show
    what struct it is), its slab and cache (``kmem``), and who points at it
    (``search -k``, which reads all of kernel memory: slow on large dumps);
    then drgn's view of the address.
    """
    start = (address - before) & ~7
    end = address + object_size + after
    words = (end - start + 7) // 8
    return [
        f"crash> rd -64 {start:#x} {words}",
        f"crash> kmem {address:#x}",
        f"crash> search -k {address:#x}",
        f">>> identify_address(prog, {address:#x})",
    ]


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
                *([_interval(report, c)] if sampled else []),
                f"{100 * report.share(c.objects):.2f}%",
                f"{approx}{counts['in_context']}",
                "-" if c.typical_offset is None else f"+{c.typical_offset:#x}",
                f"{c.examples[0]:#x}" if c.examples else "-",
                _shown_template(c.template),
            ]
        )
    left = {0, len(header) - 2}  # rank and example; the template is last and free
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = [*_header_lines(report), ""]
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
        points = _points_to(report, index - 1) if index else ""
        if points:
            lines.append(f"{'':{widths[0] + 2}}points to: {terminal_escape(points)}")
        if index and report.call_sites is not None:
            objects = shown[index - 1].objects
            by = terminal_escape(allocated_by(report.call_sites, index - 1, objects))
            lines.append(f"{'':{widths[0] + 2}}allocated by: {by}")
    lines += _shape_lines(report, top)
    if report.call_sites is not None:
        lines += ["", *(terminal_escape(line) for line in call_site_lines(report.call_sites))]
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
        + ("" if shapes.exact else f" (INEXACT: {shapes.dropped_objects} objects dropped)"),
    ]
    for rank, g in enumerate(shapes.groups[:top], 1):
        lines.append(
            f"S{rank:<3} {g.objects:>8}  {100 * report.share(g.objects):6.2f}%  "
            f"{g.examples[0]:#x}  {terminal_escape(g.shape_text())}"
        )
        points = g.attribution.points_to_text()
        if points:
            lines.append(f"{'':5}points to: {terminal_escape(points)}")
        if g.allocated_by is not None:
            lines.append(f"{'':5}allocated by: {terminal_escape(shape_allocated_by(g))}")
    return lines


def render_markdown(report: Report, top: int | None = None) -> str:
    """The top clusters as a Markdown table."""
    sampled = report.sample is not None
    lines = [f"# dumpminer: {markdown_escape(report.cache.name)}", ""]
    lines += [markdown_escape(line) + "  " for line in _header_lines(report)]
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
        interval_cell = f" {_interval(report, c)} |" if sampled else ""
        lines.append(
            f"| {rank} | {markdown_escape(_shown_template(c.template))} | "
            f"{approx}{counts['objects']} |"
            f"{interval_cell} {100 * report.share(c.objects):.2f}% | "
            f"{approx}{counts['in_context']} | {offset} | {examples} | "
            f"{markdown_escape(_points_to(report, rank - 1))} |"
            + (
                f" {markdown_escape(allocated_by(report.call_sites, rank - 1, c.objects))} |"
                if report.call_sites is not None
                else ""
            )
        )
    shapes = report.shapes
    if shapes is not None and shapes.groups:
        lines += [
            "",
            f"String-less objects: {shapes.stringless} of {shapes.objects} hold no text. "
            "Largest shape groups:",
            "",
            "| # | objects | share | shape | examples | points to |",
            "|---|---:|---:|---|---|---|",
        ]
        for rank, g in enumerate(shapes.groups[:top], 1):
            examples = ", ".join(f"`{a:#x}`" for a in g.examples)
            lines.append(
                f"| S{rank} | {g.objects} | {100 * report.share(g.objects):.2f}% | "
                f"{markdown_escape(g.shape_text())} | {examples} | "
                f"{markdown_escape(g.attribution.points_to_text())} |"
            )
    if report.call_sites is not None:
        # Symbol names come from the dump: escaped, never in a code fence.
        lines += [
            "",
            *(markdown_escape(x.strip()) + "  " for x in call_site_lines(report.call_sites)),
        ]
    return "\n".join(lines) + "\n"


#: Clusters whose first example object the HTML report shows byte by byte.
HTML_EXAMPLES = 10
#: Most bytes of one example object read for the HTML report.
HTML_OBJECT_BYTES = 512


def attach_example_bytes(report: Report, prog: Any, clusters: int = HTML_EXAMPLES) -> Report:
    """
    *report* with the first example object of its top *clusters* clusters
    read from *prog* (at most :data:`HTML_OBJECT_BYTES` each) into
    ``example_bytes``, for the HTML report's ``rd -a``-style dumps.
    Unreadable ones are left out.
    """
    size = min(report.cache.object_size, HTML_OBJECT_BYTES)
    found = dict(report.example_bytes)
    for cluster in report.clusters[:clusters]:
        if not cluster.examples or size <= 0:
            continue
        address = cluster.examples[0]
        with contextlib.suppress(Exception):
            found[address] = prog.read(address, size)
    return replace(report, example_bytes=found)


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
        from dumpminer.html import render_html

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
        from dumpminer.html import render_html

        return render_html(reports, top)
    if fmt == "json":
        doc = {"schema": MANY_SCHEMA, "reports": [to_json_dict(r, top) for r in reports]}
        return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"
    parts = [render(r, fmt, top) for r in reports]
    if fmt == "csv":
        return parts[0] + "".join(p.split("\n", 1)[1] for p in parts[1:])
    return "\n".join(parts)
