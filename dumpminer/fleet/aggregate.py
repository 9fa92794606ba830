"""
From per-dump reports to the fleet's rows: templates merged across dumps.

Pure functions of the ``dumpminer.report/1`` documents (or of their
:class:`~dumpminer.fleet.model.CacheSummary`), so the fleet report of a run
and of a second run that reuses every report are the same.

Merging, cache by cache, as clustering merges within one dump
(docs/clustering.md): a template's ``<HEX>`` and ``<NUM>`` are one kind of
number slot, and a literal template of one dump that another dump's slotted
template fits (``t.point.00017`` and ``t.point.<NUM>``, ``kmalloc-32`` and
``kmalloc-<NUM>``, ``/opt/agent/state/db.json`` and ``/opt/agent/state/<*>.json``)
joins that template: a number slot takes a decimal or hex token, a word slot
letters and digits. When several fit, the one with most objects across the
fleet wins (then the first in sort order).
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from dumpminer.fleet.model import (
    CacheSummary,
    DumpCount,
    DumpEntry,
    HostGrowth,
    TemplateRow,
)

__all__ = ["CacheSummary", "aggregate", "find_rows", "summarise_report", "template_pattern"]

_SLOT = re.compile(r"<NUM>|<HEX>|<\*>")
#: What a slot takes when a literal template is matched against it.
_SLOT_PATTERN = {
    "<NUM>": r"(?:0[xX])?[0-9A-Fa-f]+",
    "<HEX>": r"(?:0[xX])?[0-9A-Fa-f]+",
    "<*>": r"[A-Za-z0-9]+",
}


def summarise_report(doc: dict[str, Any]) -> CacheSummary:
    """The numbers the fleet needs of one ``dumpminer.report/1`` document."""
    cache = doc["cache"]
    return CacheSummary(
        name=str(cache["name"]),
        caches=tuple(cache["caches"]),
        allocated=int(cache["allocated"]),
        partial=bool(doc["partial"]),
        clusters=tuple((str(c["template"]), int(c["objects"])) for c in doc["clusters"]),
    )


def summarise_reports(doc: dict[str, Any]) -> tuple[CacheSummary, ...]:
    """The summaries of a ``dumpminer.reports/1`` (or ``report/1``) document's caches."""
    reports = doc.get("reports", [doc])
    return tuple(summarise_report(r) for r in reports)


def template_pattern(template: str) -> re.Pattern[str]:
    """The texts (or literal templates) *template* fits, as a regular expression."""
    parts = _SLOT.split(template)
    slots = _SLOT.findall(template)
    pattern = re.escape(parts[0])
    for slot, part in zip(slots, parts[1:], strict=True):
        pattern += _SLOT_PATTERN[slot] + re.escape(part)
    return re.compile(pattern, re.DOTALL)


def _key(template: str) -> str:
    """Templates that differ only in a number slot's kind share a key."""
    return template.replace("<HEX>", "<NUM>")


def _merged_keys(objects_by_key: dict[str, int]) -> dict[str, str]:
    """Each key of one cache -> the key of its row (a literal joins a slotted key it fits)."""
    slotted = sorted(
        (k for k in objects_by_key if _SLOT.search(k)), key=lambda k: (-objects_by_key[k], k)
    )
    patterns = [(k, template_pattern(k)) for k in slotted]
    into: dict[str, str] = {}
    for key in objects_by_key:
        into[key] = key
        if key in slotted or key.startswith("<fill "):
            continue
        for candidate, pattern in patterns:
            if pattern.fullmatch(key):
                into[key] = candidate
                break
    return into


def _growth(host: str, points: list[tuple[int, int]]) -> HostGrowth | None:
    """Growth per hour from (time, objects) of one host's dumps: earliest to latest."""
    if len(points) < 2:
        return None
    first = min(t for t, _ in points)
    last = max(t for t, _ in points)
    if last <= first:
        return None
    at_first = statistics.fmean(n for t, n in points if t == first)
    at_last = statistics.fmean(n for t, n in points if t == last)
    hours = (last - first) / 3600
    return HostGrowth(
        host=host,
        dumps=len(points),
        first_time=first,
        last_time=last,
        hours=round(hours, 6),
        first_objects=at_first,
        last_objects=at_last,
        per_hour=round((at_last - at_first) / hours, 3),
    )


def _order(count: DumpCount) -> tuple[bool, int, str]:
    return (count.time is None, count.time or 0, count.path)


def aggregate(dumps: Iterable[DumpEntry]) -> tuple[TemplateRow, ...]:
    """
    Every template of every counted dump, one row per cache and merged
    template, most objects first (then most dumps, cache, template).
    """
    counted = [d for d in dumps if d.counted]
    # cache -> key -> digest -> objects, and the source templates of each key.
    per_key: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    sources: dict[tuple[str, str], set[str]] = defaultdict(set)
    source_objects: dict[tuple[str, str, str], int] = defaultdict(int)
    for dump in counted:
        for cache in dump.caches:
            for template, objects in cache.clusters:
                key = _key(template)
                row = per_key[cache.name][key]
                row[dump.digest] = row.get(dump.digest, 0) + objects
                sources[cache.name, key].add(template)
                source_objects[cache.name, key, template] += objects
    by_digest = {d.digest: d for d in counted}
    rows: list[TemplateRow] = []
    for cache_name, keys in per_key.items():
        totals = {k: sum(v.values()) for k, v in keys.items()}
        merged: dict[str, dict[str, int]] = defaultdict(dict)
        merged_sources: dict[str, set[str]] = defaultdict(set)
        for key, into in _merged_keys(totals).items():
            for digest, objects in keys[key].items():
                merged[into][digest] = merged[into].get(digest, 0) + objects
            merged_sources[into] |= sources[cache_name, key]
        for key, counts in merged.items():
            rows.append(
                _row(cache_name, key, counts, merged_sources[key], source_objects, by_digest)
            )
    rows.sort(key=lambda r: (-r.objects, -r.dumps, r.cache, r.template))
    return tuple(rows)


def _row(
    cache_name: str,
    key: str,
    counts: dict[str, int],
    sources: set[str],
    source_objects: dict[tuple[str, str, str], int],
    by_digest: dict[str, DumpEntry],
) -> TemplateRow:
    """One template's row from its objects per dump."""
    per_dump = []
    for digest, objects in counts.items():
        dump = by_digest[digest]
        summary = dump.cache(cache_name)
        allocated = summary.allocated if summary is not None else 0
        share = round(objects / allocated, 6) if allocated else 0.0
        per_dump.append(DumpCount(digest, dump.path, objects, share, dump.time, dump.host))
    per_dump.sort(key=_order)
    shares = [c.share for c in per_dump]
    times = [c.time for c in per_dump if c.time is not None]
    slotted = [s for s in sources if _SLOT.search(s)]
    weight = {
        s: sum(n for (c, _, t), n in source_objects.items() if c == cache_name and t == s)
        for s in sources
    }
    shown = min(slotted or sources, key=lambda s: (-weight[s], s))
    return TemplateRow(
        cache=cache_name,
        template=shown,
        sources=tuple(sorted(sources)),
        objects=sum(counts.values()),
        share_min=min(shares),
        share_median=round(statistics.median(shares), 6),
        share_max=max(shares),
        first_seen=min(times) if times else None,
        last_seen=max(times) if times else None,
        hosts=tuple(sorted({c.host for c in per_dump if c.host is not None})),
        per_dump=tuple(per_dump),
        growth=_row_growth(cache_name, counts, by_digest),
    )


def _row_growth(
    cache_name: str, counts: dict[str, int], by_digest: dict[str, DumpEntry]
) -> tuple[HostGrowth, ...]:
    """Growth per hour on each host with several timed dumps that mined the cache."""
    points: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for dump in by_digest.values():
        if dump.host is None or dump.time is None or dump.cache(cache_name) is None:
            continue
        points[dump.host].append((dump.time, counts.get(dump.digest, 0)))
    found = (_growth(host, pts) for host, pts in sorted(points.items()))
    return tuple(g for g in found if g is not None)


def find_rows(rows: Iterable[TemplateRow], query: str) -> tuple[TemplateRow, ...]:
    """
    The rows --find names: those whose template (shown or merged) is *query*,
    else those that *query*, a text, fits.
    """
    rows = list(rows)
    exact = [r for r in rows if query == r.template or query in r.sources]
    if exact:
        return tuple(exact)
    return tuple(
        r
        for r in rows
        if any(template_pattern(s).fullmatch(query) for s in (r.template, *r.sources))
    )
