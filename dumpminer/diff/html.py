"""
A :class:`~dumpminer.diff.compare.Diff` as one self-contained HTML page, built
on the single-dump page's templates and escaping (:mod:`dumpminer.report.html`).
It reads no dump: the example objects' bytes come in the diff
(:attr:`~dumpminer.diff.compare.Diff.example_bytes`).
"""

from __future__ import annotations

from typing import Any

from dumpminer.diff.compare import Diff
from dumpminer.diff.json import to_diff_dict
from dumpminer.diff.text import header_lines, shown_changes
from dumpminer.report.follow_up import look_commands
from dumpminer.report.html import (
    CHART_BARS,
    HTML_TOP,
    chart,
    environment,
    fragment_spans,
    object_dump,
    printable,
)


def render_diff_html(diff: Diff, top: int | None = None) -> str:
    """A :class:`~dumpminer.diff.compare.Diff` as one self-contained HTML page."""
    top = HTML_TOP if top is None else top
    data = diff.example_bytes
    caches = []
    for cache in diff.caches:
        rows: list[dict[str, Any]] = []
        changes = shown_changes(cache.clusters, top)
        for change in changes:
            raw = data.get((cache.cache, change.key))
            dump = None
            if raw is not None and change.examples:
                texts = {change.key.encode("latin-1", "replace")}
                spans = fragment_spans(raw, texts, int(cache.new.get("min_length") or 1))
                if not spans and change.typical_offset is not None:
                    end = change.typical_offset
                    while end < len(raw) and printable(raw[end]):
                        end += 1
                    spans = [(change.typical_offset, end)]
                dump = object_dump(int(change.examples[0], 16), raw, spans)
            size = int((cache.new if change.side == "new" else cache.old).get("object_size") or 0)
            rows.append(
                {
                    "change": change,
                    "dump": dump,
                    "look": look_commands(int(change.examples[0], 16), size)
                    if change.examples
                    else None,
                }
            )
        caches.append(
            {
                "cache": cache,
                "rows": rows,
                "bars": chart([(ch.key, ch.delta) for ch in changes[:CHART_BARS]]),
            }
        )
    return (
        environment()
        .get_template("diff.html.j2")
        .render(
            doc=to_diff_dict(diff, top),
            header=header_lines(diff),
            caches=caches,
        )
    )
