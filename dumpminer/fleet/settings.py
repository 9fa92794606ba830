"""
What every task of a fleet run is told: ``mine``'s options (a
:class:`~dumpminer.options.MineOptions`, the one options object of
``mine``, ``diff`` and the drgn plugin), which caches, and where debuginfo is.

One frozen, picklable value sent with each task. The options that change what
a report counts are recorded in each dump's report (:meth:`MineSettings.counting`),
so that a second run knows whether a report it finds is still current.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from dumpminer.options import MineOptions


@dataclass(frozen=True, slots=True)
class MineSettings:
    """``dumpminer mine``'s options, as every dump of a fleet is mined with them."""

    #: A cache name or glob; None: each dump's ``caches_top`` largest caches.
    cache: str | None = None
    caches_top: int = 3
    #: How each cache is mined (``sample``, ``workers`` and ``progress`` are
    #: the fleet's own: see :meth:`mine_options`).
    options: MineOptions = field(default_factory=MineOptions)
    #: Where debuginfo is found, as ``mine`` finds it (docs/debuginfo.md).
    vmlinux: str | None = None
    debug_dirs: tuple[str, ...] = field(default_factory=tuple)
    use_vmlinux: bool = True
    debuginfod: bool | None = None

    def planned_caches(self) -> int:
        """How many caches of each dump are mined, at most (one task each)."""
        return 1 if self.cache is not None else self.caches_top

    def mine_options(self) -> MineOptions:
        """
        :func:`dumpminer.mine`'s options for one cache of a fleet: every slab
        (a fleet's counts are exact), no progress bar, and one process (a
        Dask worker is a daemon process and may not start mine's own workers;
        the fleet's parallelism is across dumps).
        """
        return replace(self.options, sample=None, workers=1, progress=False)

    def counting(self) -> dict[str, Any]:
        """The options that change a report's counts, as recorded in it."""
        options = self.mine_options()
        return {
            "cache": self.cache,
            "caches_top": None if self.cache is not None else self.caches_top,
            "before": options.before,
            "after": options.after,
            "min_length": options.min_length,
            "max_fragments": options.max_fragments,
            "mask_pointers": options.mask_pointers is not False,
            "call_sites": options.call_sites,
            "attribution": options.attribution,
        }
