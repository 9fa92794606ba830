"""
Comparing two dumps: what grew between them, by how much and how fast.

Each side is a vmcore (mined here, with kernel pointers blanked, see
:mod:`dumpminer.extract.pointers`) or a ``dumpminer.report/1`` JSON report written by
``mine``. Clusters are matched by template and fragments by text, cache by
cache; each match is *new*, *grown*, *shrunk*, *gone* or *same*. When both
dumps carry a time (:mod:`dumpminer.dump.dumptime`), growth is also given per
hour. The ``dumpminer.diff/1`` document is described in docs/diff.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from drgn import FaultError

from dumpminer.dump.dumptime import dump_time, iso_utc
from dumpminer.dump.open import Dump, open_dump
from dumpminer.errors import IncompleteDumpError, InputFileError, UsageError, show_path
from dumpminer.options import MineOptions
from dumpminer.report.json import MANY_SCHEMA, SCHEMA, to_json_dict
from dumpminer.report.model import DEFAULT_NOISE_FLOOR as DEFAULT_NOISE_FLOOR
from dumpminer.report.model import HTML_EXAMPLES, HTML_OBJECT_BYTES, DumpTime, Report

DIFF_SCHEMA = "dumpminer.diff/1"
#: Order of the statuses in every listing.
STATUSES = ("new", "grown", "shrunk", "gone", "same")


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
            "time_utc": iso_utc(self.time),
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
    #: Why a side's lists do not hold every template (trimmed, sampled, folded):
    #: one line each; empty when both sides hold everything.
    limits: list[str] = field(default_factory=list)
    #: Templates (and fragment texts) listed on one side only, where the other
    #: side's list is not whole: not compared, since absence there is not zero.
    not_compared: int = 0
    not_compared_fragments: int = 0

    @property
    def compared(self) -> str:
        """``"all"``, or ``"common"`` when only what both sides list is compared."""
        return "common" if self.limits else "all"


@dataclass
class Diff:
    """A whole diff: both sides, the time between them, and each cache's changes."""

    old: Side
    new: Side
    hours: float | None
    noise_floor: int
    caches: list[CacheDiff]
    notes: list[str] = field(default_factory=list)
    #: For the HTML page: (cache, template) -> the bytes of the change's
    #: first example object, read from a vmcore side (:func:`read_example_bytes`).
    example_bytes: dict[tuple[str, str], bytes] = field(default_factory=dict)


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
        if one.get("partial"):
            # Absence from a partial count is not a change (as for a vmcore side).
            raise IncompleteDumpError(
                f"{show_path(path)}: a partial report of {one['cache']['name']} "
                "(the walk was cut short); diff needs every slab of both sides"
            )
    if not reports:
        raise InputFileError(f"{path}: a dumpminer report list holding no report")
    return Side(path, "report", reports, dump.get("time"), dump.get("time_source"))


def mine_side(
    dump: Dump,
    caches: list[str],
    options: MineOptions,
) -> Side:
    """Mine each of *caches* in the opened vmcore *dump*."""
    from dumpminer.pipeline import mine

    path = dump.path
    seconds, source = dump_time(dump.info, dump.prog)
    taken = DumpTime(seconds, source)
    side = Side(path, "vmcore", {}, seconds, source, dump)
    for name in caches:
        report = mine(dump.prog, name, options, dump=dump)
        if report.progress.interrupted is not None:
            raise KeyboardInterrupt
        if report.progress.incomplete is not None:
            # Absence from a partial count is not a change: refuse, as mine
            # exits for a dump cut short (docs/exit-codes.md).
            raise IncompleteDumpError(
                f"{show_path(path)}: {report.progress.incomplete.why}; "
                "diff needs every slab of both dumps"
            )
        report = replace(report, dump=replace(report.dump, taken=taken))
        side.mined[name] = report
        side.reports[name] = to_json_dict(report)
    return side


def check_comparable(old: Side, new: Side, cache: str) -> None:
    """
    Refuse to compare reports mined with different settings, whose counts
    differ, and sampled ones: a sample's templates are clustered from the
    fragments it drew, so they are not the whole cache's templates, and its
    counts are estimates; neither can say what grew.
    """
    for label, side in (("OLD", old), ("NEW", new)):
        sample = side.reports[cache].get("sample")
        if sample:
            raise UsageError(
                f"{cache}: {label} is a sampled report ({sample.get('slabs_sampled')} of "
                f"{sample.get('slabs_total')} slabs): its templates and counts are a sample's; "
                "mine it without --sample to diff it"
            )
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
    whole: tuple[bool, bool] = (True, True),
) -> tuple[list[Change], int]:
    """
    Every item of either side as a :class:`Change`, sorted by
    :func:`change_order`, and the number of items left out: an item missing
    from a side whose list is not *whole* (OLD's, NEW's) is not compared,
    since a trimmed or sampled list does not say it holds zero.
    """
    old_by, new_by = _index(old_items, key), _index(new_items, key)
    changes = []
    skipped = 0
    for text in old_by.keys() | new_by.keys():
        a, b = old_by.get(text), new_by.get(text)
        if (a is None and not whole[0]) or (b is None and not whole[1]):
            skipped += 1
            continue
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
    return changes, skipped


def list_limits(report: dict[str, Any], label: str) -> tuple[list[str], bool, bool]:
    """
    Why *report*'s lists may leave templates out (one line each, naming the
    side *label*), and whether its cluster list and its fragment list hold
    every template and text it counted.
    """
    totals = report.get("totals") or {}
    scan = report.get("scan") or {}
    why = []
    clusters_whole = fragments_whole = True
    held = totals.get("clusters")
    if isinstance(held, int) and len(report["clusters"]) < held:
        why.append(f"{label} lists {len(report['clusters'])} of its {held} clusters (--top)")
        clusters_whole = False
    held = totals.get("fragments")
    if isinstance(held, int) and len(report["fragments"]) < held:
        fragments_whole = False
    if not scan.get("complete", True):
        fragments_whole = False
    return why, clusters_whole, fragments_whole


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
        old_why, old_clusters, old_fragments = list_limits(a, "OLD")
        new_why, new_clusters, new_fragments = list_limits(b, "NEW")
        clusters, skipped = match(
            a["clusters"], b["clusters"], "template", hours, noise_floor,
            (old_clusters, new_clusters),
        )  # fmt: skip
        fragments, skipped_fragments = match(
            a["fragments"], b["fragments"], "text", hours, noise_floor,
            (old_fragments, new_fragments),
        )  # fmt: skip
        limits = old_why + new_why
        if limits:
            result.notes.append(
                f"{name}: only templates listed on both sides are compared ({'; '.join(limits)}); "
                f"{skipped} listed on one side only are left out: absence from an incomplete "
                "list is not zero"
            )
        result.caches.append(
            CacheDiff(
                cache=name,
                old=_cache_facts(a),
                new=_cache_facts(b),
                clusters=clusters,
                fragments=fragments,
                limits=limits,
                not_compared=skipped,
                not_compared_fragments=skipped_fragments,
            )
        )
    return result


def diff_paths(
    old_path: str,
    new_path: str,
    vmlinux: tuple[str | None, str | None],
    debug_dirs: list[str],
    cache: str | None,
    caches_top: int,
    options: MineOptions,
    noise_floor: int = DEFAULT_NOISE_FLOOR,
    examples: bool = False,
) -> Diff:
    """
    Read or mine both sides and compare them. The caches are *cache* when
    given, else those of a JSON side, else the *caches_top* largest of NEW.
    With *examples* (for the HTML page), the top changes' first example
    objects are read from the vmcore sides into :attr:`Diff.example_bytes`.
    """
    from dumpminer.slub.slabinfo import slab_info

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
    notes = []
    mined_like = _report_masking(list(reports.values()))
    if mined_like is not None and mined_like != options.mask_pointers and len(reports) == 1:
        # A vmcore compared with a report is mined as the report was: pointer
        # bytes kept or blanked alike, or they would show as changes.
        options = replace(options, mask_pointers=mined_like)
        notes.append(
            "the vmcore side was mined with kernel pointers "
            + ("blanked" if mined_like else "kept")
            + ", as the report side was"
        )
    sides: list[Side] = []
    for path, lib in ((new_path, vmlinux[1]), (old_path, vmlinux[0])):
        if path in reports:
            sides.append(reports[path])
            continue
        dump = open_dump(path, lib, debug_dirs)
        if not names:
            names = [line.usage.name for line in slab_info(dump.prog).caches[:caches_top]]
        sides.append(mine_side(dump, names, options))
    new, old = sides
    diff = diff_sides(old, new, noise_floor)
    diff.notes[:0] = notes
    if examples:
        diff.example_bytes = read_example_bytes(diff)
    return diff


def _report_masking(sides: list[Side]) -> bool | None:
    """
    Whether the report sides' caches were all mined with kernel pointers
    blanked (True) or all kept (False); None without a report side, or mixed.
    """
    seen = {
        bool(doc.get("scan", {}).get("pointers_masked"))
        for side in sides
        for doc in side.reports.values()
    }
    return seen.pop() if len(seen) == 1 else None


def read_example_bytes(diff: Diff, clusters: int = HTML_EXAMPLES) -> dict[tuple[str, str], bytes]:
    """
    For the top *clusters* changes above the floor of each cache: the bytes
    of the first example object, read from the side it came from when that
    side is an open vmcore. Keyed by (cache, template).
    """
    out: dict[tuple[str, str], bytes] = {}
    for cache in diff.caches:
        shown = [c for c in cache.clusters if c.above_floor][:clusters]
        for change in shown:
            side = diff.new if change.side == "new" else diff.old
            if side.dump is None or not change.examples:
                continue
            facts = cache.new if change.side == "new" else cache.old
            size = min(int(facts.get("object_size") or 0), HTML_OBJECT_BYTES)
            try:
                address = int(change.examples[0], 16)
                out[(cache.cache, change.key)] = side.dump.prog.read(address, size)
            except (FaultError, ValueError):  # an unreadable example is left out, as in mine
                continue
    return out
