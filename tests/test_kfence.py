"""KFENCE objects: the placement rule on numbers, and a real dump with KFENCE on.

The rule (dumpminer/slub/kfence.py), as the kernel writes it:

mm/kfence/core.c (since 5.12, commit 0ce20dd84089): object i has page
``pool + (i + 1) * 2 * PAGE_SIZE``; ``addr_to_metadata()`` maps an address back with
``(addr - pool) / (2 * PAGE_SIZE) - 1``; ``kfence_guarded_alloc()`` puts the object at the
page's start or at ``ALIGN_DOWN(page + PAGE_SIZE - size, cache->align)``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import oracle
import pytest

from dumpminer.slub.kfence import metadata_index, placement_ok

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


CACHES = ("kmalloc-32", "kmalloc-64", "kmalloc-96", "kmalloc-128")


def mined(vmcore: str, vmlinux: str, cache: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{cache}.json"
    done = subprocess.run(
        [sys.executable, "-m", "dumpminer.cli", "mine", vmcore, "--vmlinux", vmlinux,
         "--cache", cache, "--format", "json", "--quiet", "-o", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    return report


@pytest.mark.parametrize("fmt", ["kdump", "elf", "makedumpfile"])
def test_kfence_objects_are_read_where_they_are(
    kfence_manifest: dict[str, Any], tmp_path: Path, fmt: str
) -> None:
    """
    On a dump with KFENCE objects in every planted cache (some at the end of their page,
    some freed), every cache's objects, fragments and ``allocated`` equal the oracle's,
    which reads KFENCE objects at kfence_metadata's address; the planted strings keep their
    exact counts. A walk that took a KFENCE page as a slab of one object at its start
    (as drgn's enumeration does) would differ: the test checks that it does.
    """
    vmcore = next(d["path"] for d in kfence_manifest["dumps"] if d["format"] == fmt)
    vmlinux = kfence_manifest["vmlinux"]
    prog = oracle.open_prog(vmcore, vmlinux)
    right_aligned = naive_differs = freed_objects = 0
    for cache in CACHES:
        allocated, freed, _ = oracle.kfence_objects(prog, cache)
        right_aligned += sum(1 for a in allocated if a % 4096)
        freed_objects += len(freed)
        expected = oracle.kfence_aware_objects(prog, cache)
        naive_differs += expected != oracle.allocated_objects(prog, cache)
        size = oracle.object_size(prog, cache)
        report = mined(vmcore, vmlinux, cache, tmp_path)
        assert report["scan"]["objects_scanned"] == len(expected) == report["cache"]["allocated"]
        assert report["cache"]["allocated_from"] == "walk"
        fragments = {f["text"]: f["objects"] for f in report["fragments"]}
        assert fragments == dict(oracle.fragment_objects(prog, expected, size, 3)), cache
        planted = kfence_manifest["planted"].get(cache)
        if planted:
            got = Counter({s: fragments.get(s, 0) for s in planted["strings"]})
            assert got == Counter(planted["strings"]), cache
    # The sample means something: KFENCE holds planted objects at the right end of their
    # page, and freed ones (decoys); a walk that ignores kfence_metadata counts otherwise.
    assert right_aligned > 0 and freed_objects > 0
    assert naive_differs > 0
    planted_in_kfence = [
        a for a in oracle.kfence_objects(prog, "kmalloc-32")[0]
        if prog.read(a + 2, 2) == b"\xd7\xa5"
    ]  # fmt: skip
    assert planted_in_kfence


def test_caches_count_kfence_objects(kfence_manifest: dict[str, Any]) -> None:
    """
    Every cache: ``caches`` adds the allocated KFENCE objects, which no counter holds,
    once; the count equals the oracle's (drgn's enumeration, KFENCE pages replaced by
    kfence_metadata's allocated objects).
    """
    vmcore = next(d["path"] for d in kfence_manifest["dumps"] if d["format"] == "kdump")
    vmlinux = kfence_manifest["vmlinux"]
    prog = oracle.open_prog(vmcore, vmlinux)
    done = subprocess.run(
        [sys.executable, "-m", "dumpminer.cli", "caches", vmcore, "--vmlinux", vmlinux,
         "--format", "json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in json.loads(done.stdout)["caches"]}
    assert len(rows) > 100
    for cache, row in rows.items():
        assert row["allocated"] == len(oracle.kfence_aware_objects(prog, cache)), cache
        assert row["allocated_exact"] is True, cache
