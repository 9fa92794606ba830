"""
What the diff's table, Markdown and HTML page share: which changes are shown,
signed numbers, and the header lines.
"""

from __future__ import annotations

from dumpminer.diff.compare import Change, Diff
from dumpminer.dump.dumptime import shown_time
from dumpminer.report.escape import terminal_escape


def shown_changes(changes: list[Change], top: int | None) -> list[Change]:
    """The changes a person is shown: above the noise floor, at most *top*."""
    return [c for c in changes if c.above_floor][:top]


def signed(value: float | int | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.1f}"
    return f"{value:+d}"


def header_lines(diff: Diff) -> list[str]:
    """Both sides and the time between them, one line each, escaped for a terminal."""
    lines = []
    for label, side in (("old", diff.old), ("new", diff.new)):
        when = (
            "no time"
            if side.time is None
            else f"time {shown_time(side.time)}, from {side.time_source}"
        )
        lines.append(f"{label} {side.path} ({side.kind}, {when})")
    if diff.hours is not None:
        lines.append(f"{diff.hours:.3f} hours apart; noise floor {diff.noise_floor} objects")
    else:
        lines.append(f"noise floor {diff.noise_floor} objects")
    lines += [f"note: {note}" for note in diff.notes]
    return [terminal_escape(line) for line in lines]
