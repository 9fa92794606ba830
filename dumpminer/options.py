"""
The options of a mining run, in one typed object.

:class:`MineOptions` is what ``dumpminer mine`` takes on its command line,
what :func:`dumpminer.mine` takes from a script, what ``diff`` mines each
vmcore side with, what drgn's ``%dumpminer`` command and the fleet pass on.
Each field is defined here once, with its default and its range
(:meth:`MineOptions.check`); the pass over slab pages gets the part it needs
(:meth:`MineOptions.pass_options`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace
from typing import Any

from dumpminer.analysis.shapes import ShapeObserver
from dumpminer.clustering.tally import DEFAULT_MAX_FRAGMENTS
from dumpminer.errors import UsageError
from dumpminer.extract.fragments import DEFAULT_MIN_LENGTH
from dumpminer.scan.engine import PassOptions
from dumpminer.slub.sampling import SampleSpec

__all__ = ["MineOptions"]


@dataclass(frozen=True, kw_only=True)
class MineOptions:
    """What to read around each object, what to count and what to add: one run's settings."""

    #: Context bytes read before and after each object (``rd -a`` around it).
    before: int = 0
    after: int = 0
    #: Shortest printable run counted (docs/extraction.md).
    min_length: int = DEFAULT_MIN_LENGTH
    #: Distinct fragments kept exactly before the rarest are folded or
    #: dropped (None: no bound; docs/performance.md).
    max_fragments: int | None = DEFAULT_MAX_FRAGMENTS
    #: A seeded random share of the slabs, counts scaled; None: every slab.
    sample: SampleSpec | None = None
    #: Leave out runs of kernel-pointer bytes (:mod:`dumpminer.extract.pointers`);
    #: False (``--keep-pointers``) counts them as text.
    mask_pointers: bool = True
    #: Read allocation call sites where a cache keeps alloc tracks.
    call_sites: bool = True
    #: Attribute the top clusters' words and group string-less objects by shape.
    attribution: bool = True
    #: Processes for large caches (None: by cache size; needs the Dump).
    workers: int | None = None
    #: Draw a progress bar on stderr.
    progress: bool = False

    def check(self) -> None:
        """Raise :class:`~dumpminer.errors.UsageError` for values out of range."""
        self.pass_options().check()
        if self.workers is not None and self.workers < 1:
            raise UsageError("--workers must be at least 1")

    def changed(self, **changes: Any) -> MineOptions:
        """
        These options with *changes* (field names as keywords); an unknown
        name is a :class:`TypeError` that lists the known ones.
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown mine option(s) {unknown}; known: {sorted(known)}")
        return replace(self, **changes)

    def pass_options(self) -> PassOptions:
        """The part of these options that the pass over slab pages reads."""
        return PassOptions(
            before=self.before,
            after=self.after,
            min_length=self.min_length,
            max_fragments=self.max_fragments,
            per_slab=self.sample is not None,
            # None meant "when a probe says so" before pointer bytes were always
            # left out: it now means the default.
            mask_pointers=self.mask_pointers is not False,
            call_sites=self.call_sites,
            observers=(
                (functools.partial(ShapeObserver, self.min_length),) if self.attribution else ()
            ),
        )
