"""
How the fleet's formats show a time and the run's summary (shared by the
text formats and the HTML page).
"""

from __future__ import annotations

import datetime

from dumpminer.fleet.model import FAILED, MINED, REUSED, FleetReport


def when(seconds: int | None) -> str:
    """A dump time for people (UTC), or ``-``."""
    if seconds is None:
        return "-"
    return f"{datetime.datetime.fromtimestamp(seconds, datetime.UTC):%Y-%m-%d %H:%M:%S}"


def summary_line(fleet: FleetReport) -> str:
    """``N dumps: M mined, R reused, F failed``."""
    return (
        f"{len(fleet.dumps)} dumps: {fleet.count(MINED)} mined, {fleet.count(REUSED)} reused, "
        f"{fleet.count(FAILED)} failed"
    )
