"""
Sampling: mine a uniform random share of a cache's slabs instead of all of
them, and scale the counts up with a confidence interval.

Slabs, not objects, are drawn, because a slab is what one read brings in:
sampling objects would read every slab anyway. The draw is seeded, so the
same seed gives the same report. The interval is Wilson's score interval for
the fraction of sampled objects holding a fragment, scaled to the cache's
allocated objects. It treats objects as drawn independently; objects that
share a slab often share a history, so for a leak allocated in bursts the
true uncertainty can be wider. Exact mode (no sampling) is the default.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from dumpminer.errors import UsageError
from dumpminer.walk import SlabPage

#: z for a two-sided 95% interval.
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


def sample_pages(pages: list[SlabPage], spec: SampleSpec) -> list[SlabPage]:
    """A seeded uniform draw of slabs from *pages*, kept in address order."""
    if not pages:
        return []
    if spec.fraction is not None:
        count = math.ceil(len(pages) * spec.fraction)
    else:
        assert spec.objects is not None
        per_slab = sum(page.objects for page in pages) / len(pages)
        count = math.ceil(spec.objects / max(per_slab, 1))
    count = max(1, min(len(pages), count))
    chosen = sorted(random.Random(spec.seed).sample(range(len(pages)), count))
    return [pages[i] for i in chosen]


def wilson_interval(hits: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion of *hits* in *trials*."""
    if trials <= 0:
        return 0.0, 1.0
    p = hits / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate(hits: int, sampled: int, population: int) -> tuple[int, int, int]:
    """Estimated count in *population*, with the 95% interval, from a sample."""
    if sampled <= 0:
        return 0, 0, population
    # A cluster's count sums its members', so it can exceed the objects
    # sampled; the interval is for a proportion, so it is capped at one.
    low, high = wilson_interval(min(hits, sampled), sampled)
    return (
        round(hits * population / sampled),
        math.floor(low * population),
        math.ceil(high * population),
    )
