"""
Comparing two dumps: what grew between them, by how much and how fast.

Each side is a vmcore (mined here, with kernel pointers blanked, see
:mod:`dumpminer.pointers`) or a ``dumpminer.report/1`` JSON report written by
``mine``. Clusters are matched by template and fragments by text, cache by
cache; each match is *new*, *grown*, *shrunk*, *gone* or *same*. When both
dumps carry a time (:mod:`dumpminer.dumptime`), growth is also given per
hour. The ``dumpminer.diff/1`` document is described in docs/diff.md.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from dumpminer.dump import Dump, open_dump
from dumpminer.dumptime import dump_time
from dumpminer.errors import InputFileError, UsageError
from dumpminer.fragments import DEFAULT_MIN_LENGTH
from dumpminer.report import (
    MANY_SCHEMA,
    SCHEMA,
    Report,
    csv_cell,
    markdown_escape,
    terminal_escape,
    to_json_dict,
)
from dumpminer.reportdata import DEFAULT_NOISE_FLOOR as DEFAULT_NOISE_FLOOR
from dumpminer.reportdata import DumpTime
from dumpminer.tally import DEFAULT_MAX_FRAGMENTS

DIFF_SCHEMA = "dumpminer.diff/1"
#: Order of the statuses in every listing.
STATUSES = ("new", "grown", "shrunk", "gone", "same")
#: Rows in a terminal table when --top is not given.
TABLE_TOP = 25


@dataclass
class Side:
    """One side of a diff: its reports by cache name, and what it is."""

    path: str
    #: ``"vmcore"`` or ``"report"`` (a JSON report read from a file).
    kind: str
    #: Cache name -> the ``dumpminer.report/1`` document of that cache.
    reports: dict[str, dict[str, Any]]
    time: int | None = None
    time_source: str | None = None
    #: For vmcore sides: the opened dump and the reports, for reading example bytes.
    dump: Dump | None = None
    mined: dict[str, Report] = field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        """The side as the diff document describes it."""
        first = next(iter(self.reports.values()), {})
        return {
            "path": self.path,
            "kind": self.kind,
            "dump": first.get("dump"),
            "time": self.time,
            "time_source": self.time_source,
        }


@dataclass
class Change:
    """One cluster (or fragment) on both sides."""

    key: str
    status: str
    old: int
    new: int
    #: Growth per hour, when both sides carry a time.
    per_hour: float | None
    typical_offset: int | None
    #: Example object addresses (hex), from the side that has the most.
    examples: list[str]
    #: Whether |delta| is above the noise floor.
    above_floor: bool
    #: The side the offset and examples come from: "old" or "new".
    side: str = "new"

    @property
    def delta(self) -> int:
        """Objects gained (negative: lost) from old to new."""
        return self.new - self.old


@dataclass
class CacheDiff:
    """The diff of one cache."""

    cache: str
    old: dict[str, Any]
    new: dict[str, Any]
    clusters: list[Change]
    fragments: list[Change]


@dataclass
class Diff:
    """A whole diff: both sides, the time between them, and each cache's changes."""

    old: Side
    new: Side
    hours: float | None
    noise_floor: int
    caches: list[CacheDiff]
    notes: list[str] = field(default_factory=list)


# --- Reading the sides -----------------------------------------------------------------------


def is_report_file(path: str) -> bool:
    """Whether *path* looks like a JSON report (its first non-blank byte is ``{``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64).lstrip()
    except OSError as e:
        raise InputFileError(f"cannot read {path}: {e.strerror}") from e
    return head.startswith(b"{")


def read_report_file(path: str) -> Side:
    """A side from a ``mine --format json`` file (one cache or several)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise InputFileError(f"cannot read {path} as a dumpminer JSON report: {e}") from e
    if not isinstance(doc, dict):
        raise InputFileError(f"{path} is not a dumpminer JSON report")
    schema = doc.get("schema")
    if schema == SCHEMA:
        docs = [doc]
    elif schema == MANY_SCHEMA and isinstance(doc.get("reports"), list):
        docs = doc["reports"]
    else:
        raise InputFileError(
            f"{path} is not a dumpminer report (schema {schema!r}; "
            f"expected {SCHEMA} or {MANY_SCHEMA})"
        )
    reports: dict[str, dict[str, Any]] = {}
    dump: dict[str, Any] = {}
    for one in docs:
        try:
            reports[str(one["cache"]["name"])] = one
            dump = one.get("dump") or {}
            entries = [*one["clusters"], *one.get("fragments", [])]
            if not all(isinstance(e, dict) and isinstance(e["objects"], int) for e in entries):
                raise TypeError
            keys = [str(c["template"]) for c in one["clusters"]]
            keys += [str(f["text"]) for f in one.get("fragments", [])]
        except (KeyError, TypeError, AttributeError) as e:
            raise InputFileError(
                f"{path}: not a whole dumpminer report (cache name, clusters and counts)"
            ) from e
        one.setdefault("fragments", [])
        one.setdefault("scan", {})
    if not reports:
        raise InputFileError(f"{path}: a dumpminer report list holding no report")
    return Side(path, "report", reports, dump.get("time"), dump.get("time_source"))


@dataclass(frozen=True)
class MineSettings:
    """How vmcore sides are mined: ``mine``'s options, plus pointer blanking."""

    before: int = 0
    after: int = 0
    min_length: int = DEFAULT_MIN_LENGTH
    max_fragments: int | None = DEFAULT_MAX_FRAGMENTS
    workers: int | None = None
    progress: bool = False
    mask_pointers: bool = True


def mine_side(
    path: str,
    vmlinux: str | None,
    debug_dirs: list[str],
    caches: list[str],
    settings: MineSettings,
) -> Side:
    """Open the vmcore at *path* and mine each of *caches*."""
    from dumpminer.mine import mine

    dump = open_dump(path, vmlinux, debug_dirs)
    seconds, source = dump_time(dump.info, dump.prog)
    taken = DumpTime(seconds, source)
    side = Side(path, "vmcore", {}, seconds, source, dump)
    for name in caches:
        report = mine(
            dump.prog,
            name,
            before=settings.before,
            after=settings.after,
            min_length=settings.min_length,
            progress=settings.progress,
            dump=dump,
            workers=settings.workers,
            max_fragments=settings.max_fragments,
            mask_pointers=settings.mask_pointers,
            attribution=False,  # diff compares clusters only
        )
        if report.partial:
            raise KeyboardInterrupt
        report = replace(report, dump=replace(report.dump, taken=taken))
        side.mined[name] = report
        side.reports[name] = to_json_dict(report)
    return side


def check_comparable(old: Side, new: Side, cache: str) -> None:
    """Refuse to compare reports mined with different settings: their counts differ."""
    a, b = old.reports[cache]["scan"], new.reports[cache]["scan"]
    for key, option in (
        ("min_length", "--min-length"),
        ("context_before", "--before"),
        ("context_after", "--after"),
    ):
        if a.get(key) != b.get(key):
            raise UsageError(
                f"{cache}: OLD was mined with {option} {a.get(key)}, NEW with {b.get(key)}; "
                "mine both sides with the same options"
            )


# --- Matching ---------------------------------------------------------------------------------


def status_of(old: int, new: int) -> str:
    """new, grown, shrunk, gone or same."""
    if old == 0 and new > 0:
        return "new"
    if new == 0 and old > 0:
        return "gone"
    if new > old:
        return "grown"
    if new < old:
        return "shrunk"
    return "same"


def change_order(change: Change) -> tuple[int, int, str]:
    """Sort key: by status, then the largest change first, then by text."""
    return (STATUSES.index(change.status), -abs(change.delta), change.key)


def _index(items: Iterable[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    return {str(item[key]): item for item in items}


def _typical_offset(item: dict[str, Any]) -> int | None:
    if "typical_offset" in item:
        value = item["typical_offset"]
        return None if value is None else int(value)
    offsets = item.get("offsets") or {}
    if not offsets:
        return None
    return int(min(offsets.items(), key=lambda kv: (-kv[1], int(kv[0])))[0])


def match(
    old_items: list[dict[str, Any]],
    new_items: list[dict[str, Any]],
    key: str,
    hours: float | None,
    noise_floor: int,
) -> list[Change]:
    """Every item of either side as a :class:`Change`, sorted by :func:`change_order`."""
    old_by, new_by = _index(old_items, key), _index(new_items, key)
    changes = []
    for text in old_by.keys() | new_by.keys():
        a, b = old_by.get(text), new_by.get(text)
        before = int(a["objects"]) if a else 0
        after = int(b["objects"]) if b else 0
        shown = b if b is not None and (a is None or after >= before) else a
        if shown is None:  # unreachable: text came from one of the two sides
            continue
        delta = after - before
        changes.append(
            Change(
                key=text,
                status=status_of(before, after),
                old=before,
                new=after,
                per_hour=None if not hours else round(delta / hours, 3),
                typical_offset=_typical_offset(shown),
                examples=list(shown.get("examples") or []),
                above_floor=abs(delta) > noise_floor,
                side="new" if shown is b else "old",
            )
        )
    changes.sort(key=change_order)
    return changes


def _cache_facts(report: dict[str, Any]) -> dict[str, Any]:
    cache, scan = report["cache"], report["scan"]
    return {
        "caches": cache.get("caches"),
        "object_size": cache.get("object_size"),
        "allocated": cache.get("allocated"),
        "objects_scanned": scan.get("objects_scanned"),
        "min_length": scan.get("min_length"),
        "pointers_masked": bool(scan.get("pointers_masked")),
        "complete": scan.get("complete", True),
    }


def diff_sides(old: Side, new: Side, noise_floor: int = DEFAULT_NOISE_FLOOR) -> Diff:
    """Compare the caches both sides hold."""
    hours = None
    if old.time is not None and new.time is not None and new.time != old.time:
        hours = (new.time - old.time) / 3600
    common = [name for name in new.reports if name in old.reports]
    if not common:
        raise UsageError(
            f"OLD holds caches {sorted(old.reports)} and NEW {sorted(new.reports)}: none in common"
        )
    result = Diff(old, new, hours, noise_floor, [])
    if old.time is None or new.time is None:
        result.notes.append("no growth per hour: a side carries no time")
    elif hours is not None and hours < 0:
        result.notes.append("NEW is older than OLD (by its clock): rates are negative")
    for name in common:
        check_comparable(old, new, name)
        a, b = old.reports[name], new.reports[name]
        if not (_cache_facts(a)["pointers_masked"] and _cache_facts(b)["pointers_masked"]):
            result.notes.append(
                f"{name}: pointer bytes not blanked on both sides (a report mined without "
                "--mask-pointers): short runs from kernel pointers may show as changes"
            )
        if not (a["scan"].get("complete", True) and b["scan"].get("complete", True)):
            result.notes.append(
                f"{name}: a side folded or dropped rare fragments (--max-fragments): "
                "fragment changes are incomplete, cluster changes are not"
            )
        result.caches.append(
            CacheDiff(
                cache=name,
                old=_cache_facts(a),
                new=_cache_facts(b),
                clusters=match(a["clusters"], b["clusters"], "template", hours, noise_floor),
                fragments=match(a["fragments"], b["fragments"], "text", hours, noise_floor),
            )
        )
    return result


# --- Rendering --------------------------------------------------------------------------------


def _change_json(change: Change) -> dict[str, Any]:
    return {
        "status": change.status,
        "old_objects": change.old,
        "new_objects": change.new,
        "delta": change.delta,
        "per_hour": change.per_hour,
        "above_floor": change.above_floor,
        "typical_offset": change.typical_offset,
        "examples": change.examples,
    }


def _summary(changes: list[Change]) -> dict[str, int]:
    return {
        status: sum(1 for c in changes if c.status == status and c.above_floor)
        for status in STATUSES[:4]
    }


def to_diff_dict(diff: Diff, top: int | None = None) -> dict[str, Any]:
    """The ``dumpminer.diff/1`` document; *top* limits each list."""
    return {
        "schema": DIFF_SCHEMA,
        "old": diff.old.facts(),
        "new": diff.new.facts(),
        "hours": None if diff.hours is None else round(diff.hours, 6),
        "noise_floor": diff.noise_floor,
        "notes": diff.notes,
        "caches": [
            {
                "cache": c.cache,
                "old": c.old,
                "new": c.new,
                "summary": _summary(c.clusters),
                "clusters": [{"template": ch.key, **_change_json(ch)} for ch in c.clusters[:top]],
                "fragments": [
                    {"text": ch.key, **_change_json(ch)}
                    for ch in c.fragments[:top]
                    if ch.status != "same"
                ],
            }
            for c in diff.caches
        ],
    }


def render_diff_json(diff: Diff, top: int | None = None) -> str:
    """JSON, ASCII only, keys in a fixed order."""
    return json.dumps(to_diff_dict(diff, top), indent=2, ensure_ascii=True) + "\n"


def shown_changes(changes: list[Change], top: int | None) -> list[Change]:
    """The changes a person is shown: above the noise floor, at most *top*."""
    return [c for c in changes if c.above_floor][:top]


def _signed(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.1f}"
    return f"{value:+d}"


def header_lines(diff: Diff) -> list[str]:
    """Both sides and the time between them, one line each, escaped for a terminal."""
    lines = []
    for label, side in (("old", diff.old), ("new", diff.new)):
        when = "no time" if side.time is None else f"time {side.time} ({side.time_source})"
        lines.append(f"{label} {side.path} ({side.kind}, {when})")
    if diff.hours is not None:
        lines.append(f"{diff.hours:.3f} hours apart; noise floor {diff.noise_floor} objects")
    else:
        lines.append(f"noise floor {diff.noise_floor} objects")
    lines += [f"note: {note}" for note in diff.notes]
    return [terminal_escape(line) for line in lines]


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
                    _signed(ch.delta),
                    _signed(ch.per_hour),
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
         "typical_offset", "examples"]
    )  # fmt: skip
    for c in diff.caches:
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
                f"{_signed(ch.delta)} | {_signed(ch.per_hour)} | {offset} |"
            )
    return "\n".join(lines) + "\n"


def render_diff(diff: Diff, fmt: str, top: int | None = None) -> str:
    """Render *diff* in *fmt*: table, json, csv, markdown or html."""
    if fmt == "html":
        from dumpminer.html import render_diff_html

        return render_diff_html(diff, top)
    renderers: dict[str, Callable[[Diff, int | None], str]] = {
        "table": render_diff_table,
        "json": render_diff_json,
        "csv": render_diff_csv,
        "markdown": render_diff_markdown,
    }
    return renderers[fmt](diff, top)


def side_of(
    path: str,
    vmlinux: str | None,
    debug_dirs: list[str],
    caches: list[str],
    settings: MineSettings,
) -> Side:
    """A side from *path*: read when it is a JSON report, else mined as a vmcore."""
    if not os.path.exists(path):
        raise InputFileError(f"cannot read {path}: no such file")
    if is_report_file(path):
        return read_report_file(path)
    return mine_side(path, vmlinux, debug_dirs, caches, settings)


def diff_paths(
    old_path: str,
    new_path: str,
    vmlinux: tuple[str | None, str | None],
    debug_dirs: list[str],
    cache: str | None,
    caches_top: int,
    settings: MineSettings,
    noise_floor: int = DEFAULT_NOISE_FLOOR,
) -> Diff:
    """
    Read or mine both sides and compare them. The caches are *cache* when
    given, else those of a JSON side, else the *caches_top* largest of NEW.
    """
    from dumpminer.slabinfo import slab_info

    for path in (old_path, new_path):
        if not os.path.exists(path):
            raise InputFileError(f"cannot read {path}: no such file")
    reports = {p: read_report_file(p) for p in (old_path, new_path) if is_report_file(p)}
    names: list[str]
    if cache is not None:
        names = [cache]
    elif reports:
        names = list(next(iter(reports.values())).reports)
    else:
        names = []
    sides: list[Side] = []
    for path, lib in ((new_path, vmlinux[1]), (old_path, vmlinux[0])):
        if path in reports:
            sides.append(reports[path])
            continue
        if not names:
            probe = open_dump(path, lib, debug_dirs)
            names = [line.usage.name for line in slab_info(probe.prog).caches[:caches_top]]
        sides.append(mine_side(path, lib, debug_dirs, names, settings))
    new, old = sides
    return diff_sides(old, new, noise_floor)
