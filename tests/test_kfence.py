"""KFENCE's placement rule, on numbers (dumpminer/kfence.py), as the kernel writes it.

mm/kfence/core.c (since 5.12, commit 0ce20dd84089): object i has page
``pool + (i + 1) * 2 * PAGE_SIZE``; ``addr_to_metadata()`` maps an address back with
``(addr - pool) / (2 * PAGE_SIZE) - 1``; ``kfence_guarded_alloc()`` puts the object at the
page's start or at ``ALIGN_DOWN(page + PAGE_SIZE - size, cache->align)``.
"""

from __future__ import annotations

import pytest

from dumpminer.kfence import metadata_index, placement_ok

POOL = 0xFFFF_8880_0400_0000
PAGE = 4096
OBJECTS = 255


def object_page(index: int) -> int:
    """The page of object *index*, as metadata_to_pageaddr() computes it."""
    return POOL + (index + 1) * 2 * PAGE


@pytest.mark.parametrize("index", [0, 1, 17, OBJECTS - 1])
def test_every_address_of_an_object_page_maps_to_its_metadata(index: int) -> None:
    page = object_page(index)
    for address in (page, page + 1, page + PAGE // 2, page + PAGE - 1):
        assert metadata_index(POOL, PAGE, address, OBJECTS) == index
    # The guard page after it belongs to the same pair, as in the kernel.
    assert metadata_index(POOL, PAGE, page + PAGE, OBJECTS) == index


def test_guard_pages_and_the_end_have_no_metadata() -> None:
    assert metadata_index(POOL, PAGE, POOL, OBJECTS) is None  # the first two pages
    assert metadata_index(POOL, PAGE, POOL + 2 * PAGE - 1, OBJECTS) is None
    assert metadata_index(POOL, PAGE, object_page(OBJECTS), OBJECTS) is None  # past the pool
    assert metadata_index(POOL, PAGE, POOL - 1, OBJECTS) is None


@pytest.mark.parametrize(("size", "align", "right"), [
    (32, 8, PAGE - 32),        # kmalloc(32) in kmalloc-32: flush with the page's end
    (20, 8, PAGE - 24),        # kmalloc(20): ALIGN_DOWN(PAGE - 20, 8)
    (100, 64, PAGE - 128),     # an aligned cache: ALIGN_DOWN(PAGE - 100, 64)
    (PAGE, 8, 0),              # a whole page: both ends are the start
])  # fmt: skip
def test_an_object_sits_at_either_end_of_its_page(size: int, align: int, right: int) -> None:
    page = object_page(3)
    assert placement_ok(page, PAGE, page, size, align)
    assert placement_ok(page, PAGE, page + right, size, align)


def test_an_object_anywhere_else_is_refused() -> None:
    page = object_page(3)
    assert not placement_ok(page, PAGE, page + 8, 32, 8)  # neither end
    assert not placement_ok(page, PAGE, page + PAGE - 32, 32, 64)  # right end, misaligned
    assert not placement_ok(page, PAGE, object_page(4), 32, 8)  # another object's page
    assert not placement_ok(page, PAGE, page, 0, 8)  # no size
    assert not placement_ok(page, PAGE, page, PAGE + 1, 8)  # larger than a page
