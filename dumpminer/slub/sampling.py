"""
Sampling: mine a uniform random share of a cache's slabs instead of all of
them, and scale the counts up with a confidence interval.

Slabs, not objects, are drawn, because a slab is what one read brings in:
sampling objects would read every slab anyway. The draw is seeded, so the
same seed gives the same report. Objects that share a slab share a history: a leak
allocated in bursts fills whole slabs, so objects are not drawn
independently, and an interval that assumed they were (Wilson's, tried
first) missed the true count one time in ten on the seed sample. The
interval is therefore the one for a ratio estimate from a simple random
sample of clusters (the slabs; Cochran, Sampling Techniques, 2.11 and 9.2),
with the finite population correction: it needs, per fragment and per
cluster, the sums over slabs of (objects holding it)^2 and of that count
times the slab's objects, which the walk keeps when sampling. Exact mode
(no sampling) is the default.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from dumpminer.errors import UsageError
from dumpminer.slub.walk import SlabPages

#: z for a two-sided 95% interval (normal approximation).
Z95 = 1.959964


@dataclass(frozen=True)
class SampleSpec:
    """What ``--sample`` asked for: a fraction of slabs, or about N objects."""

    fraction: float | None = None
    objects: int | None = None
    seed: int = 0


def parse_sample(text: str, seed: int = 0) -> SampleSpec:
    """
    ``0.1`` is a tenth of the slabs and ``1`` all of them; a whole number
    from 2 up (``500000``) is about that many objects.
    """
    try:
        value = float(text)
    except ValueError:
        raise UsageError(
            f"--sample takes a fraction or a number of objects, not {text!r}"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"--sample must be positive, not {text!r}")
    if value <= 1 or "." in text:
        if value > 1:
            raise UsageError(f"--sample fraction must be at most 1, not {text!r}")
        return SampleSpec(fraction=value, seed=seed)
    return SampleSpec(objects=int(value), seed=seed)


def asks_for_everything(spec: SampleSpec) -> bool:
    """
    Whether *spec* draws every slab whatever the cache holds: a fraction of
    1 (or more, from a library caller). Such a run is the exact one.
    """
    return spec.fraction is not None and spec.fraction >= 1


def sample_pages(pages: SlabPages, spec: SampleSpec) -> SlabPages:
    """A seeded uniform draw of slabs from *pages*, kept in address order."""
    if not pages:
        return pages
    if spec.fraction is not None:
        count = math.ceil(len(pages) * spec.fraction)
    else:
        assert spec.objects is not None
        per_slab = pages.total_objects() / len(pages)
        count = math.ceil(spec.objects / max(per_slab, 1))
    count = max(1, min(len(pages), count))
    chosen = sorted(random.Random(spec.seed).sample(range(len(pages)), count))
    return pages.take(np.array(chosen, dtype=np.intp))


@dataclass(frozen=True)
class SampledSlabs:
    """What a sample drew: slabs (of how many) and their allocated objects."""

    slabs: int
    slabs_total: int
    #: Allocated objects in the sampled slabs, and the sum of their squares.
    objects: int
    objects_square: int
    #: Allocated objects in the whole cache.
    population: int


def interval(
    hits: int, hits_square: float, hits_cross: float, drawn: SampledSlabs, z: float = Z95
) -> tuple[int, int]:
    """
    The 95% interval for the number of the cache's objects holding a
    fragment seen in *hits* sampled objects, from the per-slab sums
    *hits_square* (sum of y_i^2) and *hits_cross* (sum of y_i * n_i).
    """
    k, n = drawn.slabs, drawn.objects
    if k == 0 or n == 0:
        return 0, drawn.population
    ratio = hits / n
    if k >= drawn.slabs_total:  # Every slab was read: nothing is estimated.
        spread = 0.0
    elif k == 1:
        spread = 1.0  # One slab says nothing of the spread between slabs.
    else:
        residual = hits_square - 2 * ratio * hits_cross + ratio * ratio * drawn.objects_square
        mean = n / k
        variance = (1 - k / drawn.slabs_total) * max(residual, 0.0) / (k - 1) / (k * mean * mean)
        spread = z * math.sqrt(variance)
    low = max(0.0, ratio - spread) * drawn.population
    high = min(1.0, ratio + spread) * drawn.population
    # The sample itself holds *hits* objects, and at most what it did not read.
    unread = drawn.population - n
    return max(hits, math.floor(low)), min(hits + max(unread, 0), math.ceil(high))
