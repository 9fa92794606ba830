"""
``dumpminer fleet``: many dumps at once, on Dask distributed.

Above the pipeline (:func:`dumpminer.mine`, unchanged) and below the command
line: finding dumps (:mod:`.discover`), naming them (:mod:`.identity`), the
tasks a Dask worker runs (:mod:`.tasks`), running them and writing each dump's
report (:mod:`.run`), the fleet's rows (:mod:`.aggregate`, :mod:`.model`) and
their formats (:mod:`.render`, :mod:`.html`). docs/fleet.md describes it.

Dask is imported only when a fleet runs.
"""

from __future__ import annotations

from dumpminer.fleet.model import FleetReport
from dumpminer.fleet.run import fleet
from dumpminer.fleet.settings import MineSettings

__all__ = ["FleetReport", "MineSettings", "fleet"]
