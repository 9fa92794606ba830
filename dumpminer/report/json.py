"""
``--format json``: the ``dumpminer.report/1`` document (docs/report-format.md),
ASCII only, keys in the contract's order.
"""

from __future__ import annotations

from typing import Any

from dumpminer.analysis.attribution import SAMPLE_OBJECTS
from dumpminer.clustering.cluster import MEMBERS_SHOWN, Cluster, Slot
from dumpminer.extract.fragments import Fragment
from dumpminer.report.callsites import call_sites_json, cluster_call_sites_json
from dumpminer.report.follow_up import look_commands
from dumpminer.report.jsontext import dumps as json_text
from dumpminer.report.model import Report, leading_shape_group
from dumpminer.report.text import (
    attribution_of,
    fragment_text,
    group_points_to,
    leading_line,
    points_to,
)

SCHEMA = "dumpminer.report/1"


MANY_SCHEMA = "dumpminer.reports/1"


def _fragment_json(report: Report, fragment: Fragment) -> dict[str, Any]:
    return {
        "text": fragment_text(fragment.text),
        **report.counts(fragment),
        "offsets": {str(k): v for k, v in sorted(fragment.offsets.items())},
        "examples": [f"{a:#x}" for a in fragment.examples],
    }


def _slot_json(slot: Slot) -> dict[str, Any]:
    return {
        "kind": slot.kind,
        "distinct": slot.distinct,
        "distinct_exact": slot.distinct_exact,
        "top": [{"value": fragment_text(value), "objects": objects} for value, objects in slot.top],
    }


def _cluster_json(
    report: Report, cluster: Cluster, object_size: int, rank: int = 0
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "template": fragment_text(cluster.template),
        **report.counts(cluster),
        "typical_offset": cluster.typical_offset,
        "distinct_members": cluster.distinct_members,
        "distinct_members_exact": cluster.members_exact,
        "allocator_fill": cluster.fill is not None,
        "fill_byte": None if cluster.fill is None else f"{cluster.fill:#04x}",
        "binary": cluster.binary,
        "slots": [_slot_json(slot) for slot in cluster.slots],
        "members": [
            {"text": fragment_text(m.text), **report.counts(m)}
            for m in cluster.members[:MEMBERS_SHOWN]
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
    attribution = attribution_of(report, rank)
    entry["attribution"] = (
        None
        if attribution is None
        else {**attribution.to_json(), "points_to": points_to(report, rank)}
    )
    entry["allocated_by"] = cluster_call_sites_json(
        report.call_sites, rank, report.sample is not None
    )
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
        "string_less": _string_less_json(report),
        "call_sites": None
        if report.call_sites is None
        else call_sites_json(report.call_sites, report.sample is not None),
        "leading": _leading_json(report),
    }


def _string_less_json(report: Report) -> dict[str, Any] | None:
    """The ``string_less`` object, each group's ``points to`` line beside its attribution."""
    if report.shapes is None:
        return None
    doc = {**report.shapes.to_json(report.share), "sampled": report.sample is not None}
    for index, group in enumerate(doc["groups"]):
        group["attribution"]["points_to"] = group_points_to(report, index)
    return doc


def _leading_json(report: Report) -> dict[str, Any] | None:
    """The ``leading`` object: the string-less group that outnumbers every cluster, or None."""
    leader = leading_shape_group(report)
    if leader is None:
        return None
    return {
        "group": 0,
        "objects": leader.objects,
        "share": round(report.share(leader.objects), 6),
        "largest_cluster_objects": report.clusters[0].objects if report.clusters else 0,
        "shape_text": leader.shape_text(),
        "line": leading_line(report),
    }


def render_json(report: Report, top: int | None = None) -> str:
    """JSON, ASCII only, keys in a fixed order."""
    return json_text(to_json_dict(report, top)) + "\n"
