"""
The fleet report: what :func:`dumpminer.fleet` returns and every format renders.

Frozen dataclasses, one per concept: a dump of the fleet (:class:`DumpEntry`,
with the per-cache numbers of its report, :class:`CacheSummary`), a template
across dumps (:class:`TemplateRow`: the dumps that carry it, objects, share
per dump, first and last seen, hosts, growth per hour per host), and the whole
(:class:`FleetReport`). Its JSON form, ``dumpminer.fleet/1``, is described in
docs/fleet.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FLEET_SCHEMA = "dumpminer.fleet/1"

#: DumpEntry.status values.
MINED, REUSED, FAILED = "mined", "reused", "failed"


@dataclass(frozen=True, slots=True)
class CacheSummary:
    """What the fleet report needs of one cache's report: its clusters' counts."""

    #: The cache as asked (``cache.name``).
    name: str
    #: The caches walked (``cache.caches``).
    caches: tuple[str, ...]
    #: Allocated objects: the denominator of a share.
    allocated: int
    #: Whether the report covers only part of the cache (exit 10).
    partial: bool
    #: (template, objects) of every cluster, in the report's order.
    clusters: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class DumpEntry:
    """One dump of the fleet: who it is, what became of it, and its caches' counts."""

    path: str
    #: The identity digest (dumpminer/fleet/identity.py).
    digest: str
    #: ``mined`` (this run), ``reused`` (a current report found) or ``failed``.
    status: str
    #: The dump's report in ``--out DIR``; None when it failed.
    report: str | None
    #: ``mine``'s exit code: 0; 10 when the report covers part of a cache; else the failure's.
    exit_code: int
    #: The one-line error, or why the report is partial; None when all went well.
    error: str | None
    host: str | None
    time: int | None
    time_source: str | None
    osrelease: str | None
    build_id: str | None
    format: str | None
    size: int
    caches: tuple[CacheSummary, ...] = ()
    #: The wall time of the dump's tasks, summed (from its report's ``fleet`` section).
    task_seconds: float = 0.0

    @property
    def counted(self) -> bool:
        """Whether the dump's counts are in the fleet's (it has a report)."""
        return self.status != FAILED

    def cache(self, name: str) -> CacheSummary | None:
        """The summary of the cache asked as *name*, if this dump mined it."""
        return next((c for c in self.caches if c.name == name), None)


@dataclass(frozen=True, slots=True)
class DumpCount:
    """A template in one dump."""

    digest: str
    path: str
    objects: int
    #: objects / the cache's allocated objects in that dump.
    share: float
    time: int | None
    host: str | None


@dataclass(frozen=True, slots=True)
class HostGrowth:
    """How fast a template grew on one host: from its earliest dump to its latest."""

    host: str
    #: The host's dumps with a time that mined the template's cache.
    dumps: int
    first_time: int
    last_time: int
    hours: float
    #: Objects at the latest time (mean, if several dumps share it) and at the earliest.
    first_objects: float
    last_objects: float
    per_hour: float


@dataclass(frozen=True, slots=True)
class TemplateRow:
    """One template across the fleet (its word and number slots merged across dumps)."""

    cache: str
    #: As shown: the slotted source template with most objects, else the literal.
    template: str
    #: The per-dump templates merged into this row, sorted.
    sources: tuple[str, ...]
    objects: int
    share_min: float
    share_median: float
    share_max: float
    first_seen: int | None
    last_seen: int | None
    hosts: tuple[str, ...]
    #: The dumps that carry it, by time (dumps without one last), then path.
    per_dump: tuple[DumpCount, ...]
    growth: tuple[HostGrowth, ...]

    @property
    def dumps(self) -> int:
        """How many dumps carry the template."""
        return len(self.per_dump)


@dataclass(frozen=True, slots=True)
class FleetReport:
    """A fleet run: every dump, every template across them, and what --find found."""

    settings: dict[str, Any]
    dumps: tuple[DumpEntry, ...]
    templates: tuple[TemplateRow, ...]
    #: --find's text or template; None without it.
    find: str | None = None
    #: The rows --find matched (a subset of templates).
    found: tuple[TemplateRow, ...] = ()
    #: Where the per-dump reports are.
    out: str | None = None
    #: The Dask dashboard, when one ran.
    dashboard: str | None = None
    #: ``seconds``, ``start_seconds``, ``workers``, ``task_seconds`` (docs/fleet.md).
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> tuple[DumpEntry, ...]:
        """The dumps that could not be mined."""
        return tuple(d for d in self.dumps if not d.counted)

    def count(self, status: str) -> int:
        """Dumps with *status*."""
        return sum(1 for d in self.dumps if d.status == status)
