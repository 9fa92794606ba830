"""
One report, every format (issue 21): the ``LEADING`` line, the string-less
shape groups with their targets and call sites, and each cluster's pointer
attribution and call sites appear in the table, Markdown, JSON, CSV and HTML
rendered from the same mined report.

The findings come from the JSON document, which is itself checked against
what the sample builder planted (the manifest): the 3,000 ``link_rec`` of
kmalloc-96 pointing at ``leaky_agent:agent_table``, allocated by
``leaky_agent:new_link``. The other formats are then read as a person or a
script reads them (text with its escaping undone, CSV rows by ``kind``).
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import selected_series

import dumpminer
from dumpminer.dump.open import open_dump
from dumpminer.pipeline import attach_example_bytes
from dumpminer.report.model import Report
from dumpminer.slub.sampling import SampleSpec
from sample_dumps.build import build_sample

FORMATS = ("table", "markdown", "json", "csv", "html")
#: Clusters and shape groups whose findings are checked in every format.
CHECKED = 5


@cache
def _report(vmcore: str, vmlinux: str) -> Report:
    dump = open_dump(vmcore, vmlinux)
    report = dumpminer.mine(dump.prog, "kmalloc-96", dump=dump)
    return attach_example_bytes(report, dump.prog)


def _kdump(manifest: dict[str, Any]) -> str:
    return str(next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump"))


class _Text(HTMLParser):
    """The text a browser shows, tags dropped and entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _html_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return re.sub(r"\s+", " ", "".join(parser.parts))


class _PointsTo(HTMLParser):
    """The texts of a page's ``points-to`` elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._inside = "points-to" in (dict(attrs).get("class") or "")
        if self._inside:
            self.texts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside:
            self.texts[-1] += data


def _points_to_lines(fmt: str, shown: str) -> list[str]:
    """The ``points to`` texts of a rendering."""
    if fmt == "html":
        parser = _PointsTo()
        parser.feed(shown)
        return parser.texts
    return [line for line in shown.splitlines() if "points to" in line or "+0x" in line]


def _markdown_text(page: str) -> str:
    return re.sub(r"\\(.)", r"\1", page)


def _renderings(report: Report) -> dict[str, str]:
    return {fmt: dumpminer.render(report, fmt) for fmt in FORMATS}


def _targets(attribution: dict[str, Any] | None) -> list[str]:
    """The named targets of an attribution's pointer words (what ``points to`` names)."""
    pointers = {"self", "slab", "direct map", "kernel text", "kernel data", "module text",
                "module data", "vmalloc", "vmemmap"}  # fmt: skip
    if attribution is None:
        return []
    return [o["target"] for o in attribution["offsets"] if o["class"] in pointers and o["target"]]


def _findings(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, rank, text) per finding the JSON document holds, for the other formats."""
    found: list[tuple[str, str, str]] = []
    if doc["leading"] is not None:
        found.append(("leading", "1", "LEADING: string-less shape group S1"))
        found.append(("leading", "1", doc["leading"]["shape_text"]))
    for rank, c in enumerate(doc["clusters"][:CHECKED], 1):
        if c["attribution"] is not None and c["attribution"]["points_to"]:
            found.append(("cluster", str(rank), c["attribution"]["points_to"]))
        if c["allocated_by"] is not None:
            found += [("cluster", str(rank), s["site"]) for s in c["allocated_by"]["sites"][:1]]
    for rank, g in enumerate(doc["string_less"]["groups"][:CHECKED], 1):
        found.append(("shape", str(rank), g["shape_text"]))
        if g["attribution"]["points_to"]:
            found.append(("shape", str(rank), g["attribution"]["points_to"]))
        if g["allocated_by"] is not None:
            found += [("shape", str(rank), s["site"]) for s in g["allocated_by"]["sites"][:1]]
    if doc["call_sites"] is not None:
        for entry in doc["call_sites"]["caches"]:
            found += [("call_site", str(r), s["site"]) for r, s in enumerate(entry["sites"][:5], 1)]
    return found


def _csv_has(rows: list[dict[str, str]], kind: str, rank: str, text: str) -> bool:
    """Whether the CSV row of *kind* and *rank* holds *text* in any cell."""
    csv_kind = {"leading": "shape_group", "shape": "shape_group"}.get(kind, kind)
    for row in rows:
        if row["kind"] == csv_kind and row["rank"] == rank:
            if kind == "leading" and row["leading"] != "true":
                return False
            cells = " ".join(v.lstrip("'") for v in row.values())
            return text in cells or (kind == "leading" and text.startswith("LEADING"))
    return False


def _check_every_format(report: Report) -> dict[str, Any]:
    out = _renderings(report)
    doc = json.loads(out["json"])
    findings = _findings(doc)
    assert findings
    texts = {
        "table": out["table"],
        "markdown": _markdown_text(out["markdown"]),
        "html": _html_text(out["html"]),
    }
    rows = list(csv.DictReader(io.StringIO(out["csv"])))
    missing = []
    for kind, rank, text in findings:
        for fmt, shown in texts.items():
            if text not in shown:
                missing.append((fmt, kind, rank, text))
        if not _csv_has(rows, kind, rank, text):
            missing.append(("csv", kind, rank, text))
    assert missing == []
    return doc


def test_leading_string_less_leak_in_every_format(sample_manifest: dict[str, Any]) -> None:
    """The seed sample's kmalloc-96: the link_rec leak holds no text and leads."""
    planted = sample_manifest["string_less"]["kmalloc-96"]
    report = _report(_kdump(sample_manifest), sample_manifest["vmlinux"])
    doc = _check_every_format(report)
    group = doc["string_less"]["groups"][0]
    assert group["objects"] == planted["objects"]
    assert "&leaky_agent:agent_table" in group["shape"]
    assert "leaky_agent:agent_table" in _targets(group["attribution"])
    line = group["attribution"]["points_to"]
    assert "+0x10 module data leaky_agent:agent_table (100% of " in line
    if doc["clusters"][0]["objects"] >= planted["objects"]:
        # Where agent_table's address holds printable bytes (6.12), the leak is
        # cluster 1 itself: no LEADING line is needed, and none is written.
        assert doc["leading"] is None
        assert "LEADING" not in dumpminer.render(report, "table")
        return
    assert doc["leading"]["objects"] == planted["objects"]
    assert doc["leading"]["line"].startswith("LEADING: string-less shape group S1, 3000 objects")
    rows = list(csv.DictReader(io.StringIO(dumpminer.render(report, "csv"))))
    leading = [r for r in rows if r["leading"] == "true"]
    assert [(r["kind"], r["rank"], r["objects"]) for r in leading] == [
        ("shape_group", "1", str(planted["objects"]))
    ]
    page = _html_text(dumpminer.render(report, "html"))
    # The page names the leak before its cluster table, and its target.
    assert page.index("LEADING:") < page.index("Top clusters by objects")
    assert "leaky_agent:agent_table" in page[: page.index("Top clusters by objects")]


@pytest.fixture(scope="module")
def slub_debug_manifest() -> dict[str, Any]:
    if "6.1" not in selected_series():
        pytest.skip("DUMPMINER_SERIES leaves out 6.1, the series of the slub-debug sample")
    manifest: dict[str, Any] = json.loads(Path(build_sample("slub-debug", "6.1")).read_text())
    return manifest


def test_call_sites_in_every_format(slub_debug_manifest: dict[str, Any]) -> None:
    """The slub-debug sample keeps alloc tracks: every format names the leak's call site."""
    planted = slub_debug_manifest["string_less"]["kmalloc-96"]
    report = _report(_kdump(slub_debug_manifest), slub_debug_manifest["vmlinux"])
    doc = _check_every_format(report)
    site = f"leaky_agent:{planted['alloc_function']}+"
    group = doc["string_less"]["groups"][0]
    assert group["objects"] == planted["objects"]
    assert group["allocated_by"]["sites"][0]["site"].startswith(site)
    assert doc["call_sites"]["caches"][0]["sites"][0]["site"].startswith(site)
    assert doc["call_sites"]["caches"][0]["sites"][0]["objects"] >= planted["objects"]
    for fmt in FORMATS:
        assert site in html.unescape(_markdown_text(dumpminer.render(report, fmt))), fmt


def _percentages_without_sample(line: str) -> list[str]:
    """The ``NN%`` figures of a ``points to`` text that do not say what they are of."""
    return re.findall(r"(?<!sampled )\(\d+%(?! of \d+ sampled)", line)


def test_sampled_figures_say_they_are_sampled(slub_debug_manifest: dict[str, Any]) -> None:
    """
    Attribution shares come from a few sampled objects, and with --sample the
    shape groups and call sites count the objects read: every format says so.
    """
    vmcore, vmlinux = _kdump(slub_debug_manifest), slub_debug_manifest["vmlinux"]
    dump = open_dump(vmcore, vmlinux)
    report = dumpminer.mine(dump.prog, "kmalloc-96", dump=dump, sample=SampleSpec(fraction=0.3))
    doc = json.loads(dumpminer.render(report, "json"))
    assert doc["sample"] is not None
    assert doc["string_less"]["sampled"] is True and doc["call_sites"]["sampled"] is True
    assert doc["clusters"][0]["allocated_by"]["sampled"] is True
    objects_read = doc["sample"]["objects_sampled"]
    # The first cluster whose objects point somewhere (a run of slub_debug's
    # poison, which the draw may put first, points nowhere: no line to check).
    first = next(c for c in doc["clusters"] if c["attribution"] and c["attribution"]["points_to"])
    sampled = first["attribution"]["sampled"]
    assert 0 < sampled < first["objects"]
    for fmt in ("table", "markdown", "html", "csv"):
        page = _markdown_text(dumpminer.render(report, fmt))
        lines = _points_to_lines(fmt, page)
        assert any(f"% of {sampled} sampled)" in line for line in lines), fmt
        for line in lines:
            assert _percentages_without_sample(line) == [], (fmt, line)
        shown = _html_text(page) if fmt == "html" else page
        if fmt != "csv":
            assert f"SAMPLED: counts of the {objects_read} objects read, not scaled" in shown
            site = first["allocated_by"]["sites"][0]
            assert f"{site['site']} {site['objects']} sampled (" in shown, fmt


POINTER_CLASSES = {"self", "slab", "direct map", "kernel text", "kernel data", "module text",
                   "module data", "vmalloc", "vmemmap"}  # fmt: skip


def test_points_to_keeps_the_offsets_that_tell_the_struct_apart(
    sample_manifest: dict[str, Any],
) -> None:
    """
    inode_cache: every cluster is a struct inode with the same ~20 pointer
    words; the lines keep the offsets whose target differs between groups
    (i_fop: which file's inode), not every word.
    """
    dump = open_dump(_kdump(sample_manifest), sample_manifest["vmlinux"])
    report = dumpminer.mine(dump.prog, "inode_cache", dump=dump)
    doc = json.loads(dumpminer.render(report, "json"))
    groups = [c["attribution"] for c in doc["clusters"] if c["attribution"]]
    groups += [g["attribution"] for g in doc["string_less"]["groups"]]
    # The oracle: per offset, the distinct (class, target) pairs over all groups.
    seen: dict[int, set[tuple[str, str | None]]] = {}
    for a in groups:
        for o in a["offsets"]:
            seen.setdefault(o["offset"], set()).add((o["class"], o["target"]))
    differing = {offset for offset, kinds in seen.items() if len(kinds) > 1}
    assert differing, "inode_cache's groups differ somewhere (i_fop)"
    table = dumpminer.render(report, "table")
    lines = [x for x in table.splitlines() if x.lstrip().startswith("points to: ")]
    assert lines
    for a in groups:
        pointers = [o for o in a["offsets"] if o["class"] in POINTER_CLASSES]
        if not pointers:
            continue
        line = a["points_to"]
        shown = [int(x, 16) for x in re.findall(r"\+(0x[0-9a-f]+) ", line)]
        assert 0 < len(shown) <= 6, line
        telling = [o["offset"] for o in pointers if o["offset"] in differing]
        # What tells the groups apart is shown first; the rest is counted.
        assert set(telling[:6]) <= set(shown) or len(shown) == 6, line
        if len(pointers) > len(shown):
            assert re.search(r"\(\+\d+ more", line), line
        assert line in table or not line
    assert max(len(x) for x in lines) < 400
