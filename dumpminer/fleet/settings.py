"""
What every task of a fleet run is told: ``mine``'s options (as a
:class:`~dumpminer.options.MineOptions`, :meth:`MineSettings.mine_options`),
which caches, and where debuginfo is.

One frozen, picklable value sent with each task. The options that change what
a report counts are recorded in each dump's report (:meth:`MineSettings.counting`),
so that a second run knows whether a report it finds is still current.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dumpminer.clustering.tally import DEFAULT_MAX_FRAGMENTS
from dumpminer.extract.fragments import DEFAULT_MIN_LENGTH
from dumpminer.options import MineOptions


@dataclass(frozen=True, slots=True)
class MineSettings:
    """``dumpminer mine``'s options, as every dump of a fleet is mined with them."""

    #: A cache name or glob; None: each dump's ``caches_top`` largest caches.
    cache: str | None = None
    caches_top: int = 3
    before: int = 0
    after: int = 0
    min_length: int = DEFAULT_MIN_LENGTH
    max_fragments: int | None = DEFAULT_MAX_FRAGMENTS
    #: As ``mine``'s: True blanks, False keeps, None lets the probe decide.
    mask_pointers: bool = True
    call_sites: bool = True
    attribution: bool = True
    #: Where debuginfo is found, as ``mine`` finds it (docs/debuginfo.md).
    vmlinux: str | None = None
    debug_dirs: tuple[str, ...] = field(default_factory=tuple)
    use_vmlinux: bool = True
    debuginfod: bool | None = None

    def mine_options(self) -> MineOptions:
        """
        :func:`dumpminer.mine`'s options for one cache of a fleet: no progress
        bar, and one process (a Dask worker is a daemon process and may not
        start mine's own workers; the fleet's parallelism is across dumps).
        """
        return MineOptions(
            before=self.before,
            after=self.after,
            min_length=self.min_length,
            max_fragments=self.max_fragments,
            mask_pointers=self.mask_pointers,
            call_sites=self.call_sites,
            attribution=self.attribution,
            workers=1,
            progress=False,
        )

    def counting(self) -> dict[str, Any]:
        """The options that change a report's counts, as recorded in it."""
        return {
            "cache": self.cache,
            "caches_top": None if self.cache is not None else self.caches_top,
            "before": self.before,
            "after": self.after,
            "min_length": self.min_length,
            "max_fragments": self.max_fragments,
            "mask_pointers": self.mask_pointers,
            "call_sites": self.call_sites,
            "attribution": self.attribution,
        }
