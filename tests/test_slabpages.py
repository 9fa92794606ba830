"""
SlabPages, the slab head pages of a walk held as columns: the same pages
as the tuples they replace, in the same order, however they are cut up
(slices, draws, the shares of worker processes) or sent to a worker.
"""

from __future__ import annotations

import pickle
import random

import pytest

from dumpminer.scan.workers import split_pages
from dumpminer.slub.walk import SlabPage, SlabPages


def tuples(n: int, seed: int = 1) -> list[SlabPage]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        pfn = 0x100000 + 2 * i
        freelist = rng.choice([0, 0xFFFF888000000000 + rng.randrange(1 << 30)])
        cache = rng.choice([0xFFFF888100000000, 0xFFFF888200000000])
        address = 0xFFFFEA0000000000 + 64 * pfn
        out.append(SlabPage(address, pfn, cache, freelist, rng.randrange(1, 129)))
    return out


def test_pages_are_the_tuples_they_hold() -> None:
    rows = tuples(5000)
    pages = SlabPages.from_pages(rows)
    assert len(pages) == 5000
    assert list(pages) == rows
    assert [pages[i] for i in (0, 17, 4999, -1)] == [rows[0], rows[17], rows[4999], rows[-1]]
    assert list(pages[100:250]) == rows[100:250]
    assert list(pages.take(pages.objects.argsort(kind="stable"))) == sorted(
        rows, key=lambda p: p.objects
    )
    assert pages.total_objects() == sum(p.objects for p in rows)
    assert pickle.loads(pickle.dumps(pages)) == pages
    assert SlabPages.concatenate([pages[:10], pages[10:]]) == pages
    assert list(SlabPages.concatenate([pages[10:], pages[:10]]).sorted_by_pfn()) == rows
    assert len(SlabPages.from_pages([])) == 0 and not SlabPages.concatenate([])
    with pytest.raises(IndexError):
        pages[5000]


def _split_as_before(pages: list[SlabPage], shares: int) -> list[list[SlabPage]]:
    """The list-of-tuples split that split_pages replaced."""
    total = sum(page.objects for page in pages)
    out: list[list[SlabPage]] = [[] for _ in range(shares)]
    seen = 0
    for page in pages:
        out[min(shares - 1, seen * shares // max(total, 1))].append(page)
        seen += page.objects
    return [share for share in out if share]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 1000])
@pytest.mark.parametrize("shares", [1, 2, 3, 4])
def test_worker_shares_split_as_before(n: int, shares: int) -> None:
    rows = tuples(n, seed=n + shares)
    got = [list(share) for share in split_pages(SlabPages.from_pages(rows), shares)]
    assert got == _split_as_before(rows, shares)
