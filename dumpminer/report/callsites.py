"""
Allocation call sites in the report: the JSON objects (``call_sites``, each
cluster's ``allocated_by``), the table's section and its ``allocated by:``
lines. The call sites themselves are read in
:mod:`dumpminer.analysis.callsites`; escaping is the caller's.
"""

from __future__ import annotations

from typing import Any

from dumpminer.analysis.callsites import CallSite, CallSiteReport
from dumpminer.analysis.shapes import ShapeGroup

#: Call sites the table lists under the clusters, and stack frames shown.
TABLE_SITES = 5


TABLE_FRAMES = 8


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def call_sites_json(report: CallSiteReport, sampled: bool = False) -> dict[str, Any]:
    """The ``call_sites`` section of the JSON report (docs/report-format.md)."""
    return {
        "hz": report.hz,
        "jiffies": report.jiffies,
        "uptime_seconds": report.uptime,
        "sampled": sampled,
        "caches": [
            {
                "cache": entry.cache,
                "objects": entry.objects,
                "distinct_sites": entry.distinct_sites,
                "sites": [_site_json(site, entry.objects) for site in entry.sites],
            }
            for entry in report.caches
        ],
    }


def _site_json(site: CallSite, total: int) -> dict[str, Any]:
    return {
        "site": site.name,
        "address": f"{site.address:#x}",
        "objects": site.objects,
        "share": round(site.objects / total, 6) if total else 0.0,
        "pids": [{"pid": pid, "objects": n} for pid, n in site.pids],
        "pids_seen": site.pids_seen,
        "cpus": [{"cpu": cpu, "objects": n} for cpu, n in site.cpus],
        "cpus_seen": site.cpus_seen,
        "age_seconds": {"min": site.age_min, "max": site.age_max},
        "objects_per_hour": site.rate_per_hour,
        "requested_sizes": [{"size": size, "objects": n} for size, n in site.requested_sizes],
        "stacks": [
            {"handle": f"{stack.handle:#x}", "objects": stack.objects, "frames": list(stack.frames)}
            for stack in site.stacks
        ],
    }


def cluster_call_sites_json(
    report: CallSiteReport | None, index: int, sampled: bool = False
) -> dict[str, Any] | None:
    """A cluster's ``allocated_by`` in the JSON report; None without tracks."""
    if report is None or index >= len(report.clusters):
        return None
    entry = report.clusters[index]
    return {
        "objects": entry.objects,
        "sampled": sampled,
        "distinct_sites": entry.distinct_sites,
        "sites": [
            {
                "site": site.name,
                "address": f"{site.address:#x}",
                "objects": site.objects,
                "stack": list(site.stack),
            }
            for site in entry.sites
        ],
    }


def allocated_by(
    report: CallSiteReport | None, index: int, objects: int | None = None, sampled: bool = False
) -> str:
    """
    A cluster's call sites in one line, ``leaky_agent:new_rule+0x2c 5000
    (100%)``, more sites after commas; empty without tracks. Shares are of
    the cluster's *objects* (as counted; default: those tracked), and the
    objects without a track (a glob over caches with and without tracks) are
    said. With *sampled* (--sample), counts are of the objects read and say so.
    """
    if report is None or index >= len(report.clusters):
        return ""
    entry = report.clusters[index]
    total = entry.objects if objects is None else objects
    if not entry.sites:
        return "no tracked object"
    parts = [
        f"{site.name} {site.objects}{' sampled' if sampled else ''} "
        f"({100 * site.objects / total:.0f}%)"
        if total
        else site.name
        for site in entry.sites
    ]
    more = entry.distinct_sites - len(entry.sites)
    untracked = total - entry.objects
    return (
        ", ".join(parts)
        + (f", {more} more" if more > 0 else "")
        + (f"; {untracked} untracked" if untracked > 0 else "")
    )


def site_details(site: CallSite) -> str:
    """A call site's ages, rate, pids, CPUs: ``age 0.02-0.044 s; pid 1; cpu 0``."""
    pids = ", ".join(f"{pid}" for pid, _ in site.pids[:3])
    cpus = ", ".join(f"{cpu}" for cpu, _ in site.cpus[:3])
    rate = "" if site.rate_per_hour is None else f", {site.rate_per_hour:.0f}/h"
    return (
        f"age {_seconds(site.age_min)}-{_seconds(site.age_max)} s{rate}; pid {pids}"
        f"{' ...' if site.pids_seen > 3 else ''}; cpu {cpus}"
        f"{' ...' if site.cpus_seen > 3 else ''}"
    )


def call_site_lines(report: CallSiteReport, sampled: bool = False) -> list[str]:
    """
    The table's call-site section: per cache, the top sites, then the top
    one's stack. With *sampled* (--sample) the counts are of the objects
    read, not scaled, and the header says so.
    """
    hz = "HZ unknown" if report.hz is None else f"HZ {report.hz}"
    note = "; SAMPLED: counts of the objects read, not scaled" if sampled else ""
    lines = [
        f"allocation call sites (alloc tracks; {hz}, uptime {_seconds(report.uptime)} s{note}):"
    ]
    for entry in report.caches:
        lines.append(
            f"  {entry.cache}: {entry.objects} {'sampled ' if sampled else ''}objects tracked, "
            f"{entry.distinct_sites} call sites"
        )
        for site in entry.sites[:TABLE_SITES]:
            lines.append(f"    {site.objects:>9}  {site.name}  {site_details(site)}")
        top = entry.sites[0] if entry.sites else None
        if top is not None and top.stacks:
            stack = top.stacks[0]
            lines.append(f"    stack of {stack.objects} objects from {top.name}:")
            lines += [f"      {frame}" for frame in stack.frames[:TABLE_FRAMES]]
    for error in report.module_errors:
        lines.append(f"  unnamed (module unreadable): {error}")
    return lines


def shape_allocated_by(group: ShapeGroup) -> str:
    """A shape group's ``allocated by:`` text: its sample's top call sites."""
    if group.allocated_by is None:
        return ""
    sampled = len(group.sampled)
    shown = ", ".join(f"{name} ({count} of {sampled} sampled)"
                      for name, count in group.allocated_by[:3])  # fmt: skip
    return shown or f"no track read ({sampled} sampled)"

