"""
The ``dumpminer.diff/1`` JSON document of a diff (docs/diff.md).
"""

from __future__ import annotations

from typing import Any

from dumpminer.diff.compare import DIFF_SCHEMA, STATUSES, Change, Diff
from dumpminer.report.jsontext import dumps as json_text


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
                "compared": c.compared,
                "limits": c.limits,
                "not_compared": c.not_compared,
                "not_compared_fragments": c.not_compared_fragments,
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
    return json_text(to_diff_dict(diff, top)) + "\n"
