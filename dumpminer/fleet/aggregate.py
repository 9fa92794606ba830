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
from dataclasses import dataclass
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
    """
    Each key of one cache -> the key of its row (a literal joins a slotted key
    it fits). A slotted key is tried only on literals that start with its fixed
    text before the first slot (or, when it starts with a slot, end with its
    text after the last), so a noisy cache of many literals costs a few
    lookups per literal, not a match against every slotted key.
    """
    slotted = sorted(
        (k for k in objects_by_key if _SLOT.search(k)), key=lambda k: (-objects_by_key[k], k)
    )
    by_head: dict[str, list[tuple[int, str, re.Pattern[str]]]] = defaultdict(list)
    by_tail: dict[str, list[tuple[int, str, re.Pattern[str]]]] = defaultdict(list)
    for rank, key in enumerate(slotted):
        parts = _SLOT.split(key)
        entry = (rank, key, template_pattern(key))
        if parts[0] or not parts[-1]:
            by_head[parts[0]].append(entry)  # "" collects keys with no fixed text at either end
        else:
            by_tail[parts[-1]].append(entry)
    heads = sorted({len(h) for h in by_head})
    tails = sorted({len(t) for t in by_tail})
    into: dict[str, str] = {}
    for key in objects_by_key:
        into[key] = key
        if _SLOT.search(key) or key.startswith("<fill "):
            continue
        candidates = [e for n in heads if n <= len(key) for e in by_head.get(key[:n], ())]
        candidates += [e for n in tails if n <= len(key) for e in by_tail.get(key[-n:], ())]
        for _, candidate, pattern in sorted(candidates, key=lambda e: e[0]):
            if pattern.fullmatch(key):
                into[key] = candidate
                break
    return into


@dataclass(frozen=True, slots=True)
class _HostSpan:
    """A host's timed dumps that mined a cache: its earliest and latest, for growth."""

    host: str
    dumps: int
    first_time: int
    last_time: int
    #: The digests of the dumps taken at the earliest and at the latest time.
    first: tuple[str, ...]
    last: tuple[str, ...]

    def growth(self, counts: dict[str, int]) -> HostGrowth:
        """Growth per hour of a template with *counts* objects per dump (0 where absent)."""
        at_first = statistics.fmean(counts.get(d, 0) for d in self.first)
        at_last = statistics.fmean(counts.get(d, 0) for d in self.last)
        hours = (self.last_time - self.first_time) / 3600
        return HostGrowth(
            host=self.host,
            dumps=self.dumps,
            first_time=self.first_time,
            last_time=self.last_time,
            hours=round(hours, 6),
            first_objects=at_first,
            last_objects=at_last,
            per_hour=round((at_last - at_first) / hours, 3),
        )


def _spans(cache_name: str, dumps: Iterable[DumpEntry]) -> tuple[_HostSpan, ...]:
    """
    Per host, its timed dumps that mined *cache_name*, when there are several
    and not all of one time (as ``diff`` needs two times to give a rate).
    """
    timed: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for dump in dumps:
        if dump.host is not None and dump.time is not None and dump.cache(cache_name):
            timed[dump.host].append((dump.time, dump.digest))
    spans = []
    for host, points in sorted(timed.items()):
        first, last = min(points)[0], max(points)[0]
        if len(points) < 2 or last <= first:
            continue
        spans.append(_HostSpan(host, len(points), first, last,
                               tuple(d for t, d in points if t == first),
                               tuple(d for t, d in points if t == last)))  # fmt: skip
    return tuple(spans)


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
        allocated = {}
        for dump in counted:
            summary = dump.cache(cache_name)
            if summary is not None:
                allocated[dump.digest] = summary.allocated
        spans = _spans(cache_name, counted)
        totals = {k: sum(v.values()) for k, v in keys.items()}
        merged: dict[str, dict[str, int]] = defaultdict(dict)
        merged_sources: dict[str, set[str]] = defaultdict(set)
        for key, into in _merged_keys(totals).items():
            for digest, objects in keys[key].items():
                merged[into][digest] = merged[into].get(digest, 0) + objects
            merged_sources[into] |= sources[cache_name, key]
        for key, counts in merged.items():
            shown = _shown(cache_name, merged_sources[key], source_objects)
            rows.append(_row(cache_name, shown, counts, merged_sources[key], by_digest, allocated,
                             spans))  # fmt: skip
    rows.sort(key=lambda r: (-r.objects, -r.dumps, r.cache, r.template))
    return tuple(rows)


def _shown(
    cache_name: str, sources: set[str], source_objects: dict[tuple[str, str, str], int]
) -> str:
    """The template a row is shown as: its slotted source with most objects, else a literal."""
    slotted = [s for s in sources if _SLOT.search(s)]
    return min(slotted or sources, key=lambda s: (-source_objects[cache_name, _key(s), s], s))


def _row(
    cache_name: str,
    shown: str,
    counts: dict[str, int],
    sources: set[str],
    by_digest: dict[str, DumpEntry],
    allocated: dict[str, int],
    spans: tuple[_HostSpan, ...],
) -> TemplateRow:
    """One template's row from its objects per dump."""
    per_dump = []
    for digest, objects in counts.items():
        dump = by_digest[digest]
        total = allocated.get(digest, 0)
        share = round(objects / total, 6) if total else 0.0
        per_dump.append(DumpCount(digest, dump.path, objects, share, dump.time, dump.host))
    per_dump.sort(key=_order)
    shares = [c.share for c in per_dump]
    times = [c.time for c in per_dump if c.time is not None]
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
        growth=tuple(span.growth(counts) for span in spans),
    )


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
