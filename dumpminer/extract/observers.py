"""
What is done with each allocated object, besides counting its fragments.

The engine (:mod:`dumpminer.scan.engine`) reads slabs in batches and hands every
batch of allocated objects to the fragment tally. Other analyses (the
allocation tracks that ``slub_debug=U`` leaves behind each object, the shape
of objects that hold no text) need the same objects, and reading the slabs a
second time would double the cost of a run. So an analysis is an
:class:`ObjectObserver`: the engine gives it every :class:`ObjectBatch` it
reads, on a counting thread, and folds the partial results back in the order
the batches were read, on the walking thread, as it does for fragments.

An observer is created in each process that walks slabs (see
:mod:`dumpminer.scan.workers`), from a factory that must pickle (a module-level
class or function), and the observers of several processes merge.

.. warning::

    :attr:`ObjectBatch.rows` holds each object's whole stride, from the
    object's first byte to the next object's: with ``slub_debug`` that is
    the object, its right red zone, the free pointer if it lies outside the
    object, the alloc and free tracks, and padding, followed by the left red
    zone of the *next* object (``red_left_pad`` bytes). Only the first
    ``layout.object_size`` bytes are the caller's.

    The engine reuses a counting thread's batch memory for its next batch:
    a partial result must hold copies (fancy indexing, ``.copy()``,
    ``tobytes()``), never views of :attr:`ObjectBatch.rows` or
    :attr:`ObjectBatch.addresses`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt
from drgn import Object, Program

from dumpminer.slub.walk import CacheLayout

__all__ = ["ObjectBatch", "ObjectObserver", "ObserverFactory", "RowLabeller", "RowLabels"]


@dataclass(frozen=True)
class ObjectBatch:
    """Allocated objects of one cache, as the engine read them."""

    layout: CacheLayout
    #: One row per allocated object: its whole stride (see the module warning).
    rows: npt.NDArray[np.uint8]
    #: The address of each row's object, ascending within a slab.
    addresses: npt.NDArray[np.uint64]

    @property
    def objects(self) -> npt.NDArray[np.uint8]:
        """The caller's bytes of each object: the first ``object_size`` of each row."""
        return self.rows[:, : self.layout.object_size]


class ObjectObserver(Protocol):
    """An analysis of every allocated object of a walk."""

    def begin(self, prog: Program, caches: list[Object]) -> None:
        """Once per process, before the walk: read what the analysis needs of *caches*."""

    def observe(self, batch: ObjectBatch) -> Any:
        """
        Look at one batch, on a counting thread (several may run at once, so
        touch no shared state here); return a partial result for :meth:`absorb`.
        """

    def absorb(self, partial: Any) -> None:
        """Fold in what :meth:`observe` returned, on the walking thread, in batch order."""

    def merge(self, other: Self) -> None:
        """Fold in the observer of another process that walked other slabs."""


#: A label per row of a batch (small ints indexing the keys) and each label's key.
RowLabels = tuple[npt.NDArray[np.int64], list[Hashable]]


@runtime_checkable
class RowLabeller(Protocol):
    """
    An observer that also labels each object (its allocation call site, say),
    so that fragments are counted per (text, label) too and each cluster's
    objects can be split by label exactly (:mod:`dumpminer.analysis.callsites`). The
    engine uses the first observer that is one.
    """

    def row_labels(self, partial: Any) -> RowLabels | None:
        """The labels of the batch that :meth:`observe` returned *partial* for, or None."""


#: Makes one observer per walking process; must pickle (module-level class or function).
ObserverFactory = Callable[[], ObjectObserver]
