"""Broken per-CPU slab state never stops the run: damaged copies of the 4-CPU ELF samples.

A panic can stop a CPU in the middle of a slab operation, so a dump may hold a CPU's
lockless freelist or partial list half updated; a dump cut short loses the per-CPU areas
(at the top of memory) first. Here, for each CPU in turn, a copy of the sample's ELF dump
gets one such damage: its freelist loops on itself, its freelist points into another slab,
its partial list loops, or its per-CPU area is missing from the dump. ``dumpminer mine``
must exit 0, name the CPU, the cache and what was lost, and count everything else exactly,
as drgn's enumeration of the undamaged dump says (tests/oracle.py).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import drgn
import oracle
import pytest
from drgn.helpers.linux.mm import follow_phys, pfn_to_virt, virt_to_phys
from drgn.helpers.linux.percpu import per_cpu_ptr
from drgn.helpers.linux.slab import find_slab_cache
from hostile import PT_LOAD, patch, read_phys, read_segments, relayout, without_pages

CACHES = ("kmalloc-32", "kmalloc-64", "kmalloc-96", "kmalloc-128")
CPUS = (0, 1, 2, 3)


def mine_json(vmcore: Path, vmlinux: str, cache: str) -> tuple[int, dict[str, Any] | None, str]:
    """``dumpminer mine --format json``: exit code, report (if any), stderr."""
    out = vmcore.with_suffix(".json")
    out.unlink(missing_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "dumpminer.cli", "mine", str(vmcore), "--vmlinux", vmlinux,
         "--cache", cache, "--format", "json", "--quiet", "-o", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    report = json.loads(out.read_text()) if out.exists() else None
    return done.returncode, report, done.stderr


@pytest.fixture(scope="module")
def elf(sample_manifest: dict[str, Any]) -> str:
    return str(next(d["path"] for d in sample_manifest["dumps"] if d["format"] == "elf"))


@pytest.fixture(scope="module")
def prog(elf: str, sample_manifest: dict[str, Any]) -> drgn.Program:
    """The undamaged ELF dump, read by drgn alone: the oracle."""
    return oracle.open_prog(elf, sample_manifest["vmlinux"])


@pytest.fixture(scope="module")
def damaged(elf: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One copy of the ELF dump per series; each test patches it and puts the bytes back."""
    path = tmp_path_factory.mktemp("percpu") / "damaged.vmcore"
    shutil.copyfile(elf, path)
    yield path
    path.unlink()


def swab64(value: int) -> int:
    return int.from_bytes(value.to_bytes(8, "little"), "big")


def slab_span(prog: drgn.Program, cache: drgn.Object, slab: drgn.Object) -> tuple[int, int]:
    """[start, end) of a slab's objects (red zone included), by drgn."""
    pfn = (slab.value_() - prog["vmemmap_base"].value_()) // drgn.sizeof(prog.type("struct page"))
    start = pfn_to_virt(prog, pfn).value_()
    return start, start + slab.objects.value_() * cache.size.value_() + cache.red_left_pad.value_()


def expected_without(
    prog: drgn.Program, cache_name: str, spans: list[tuple[int, int]]
) -> tuple[int, dict[str, int]]:
    """The oracle's objects and fragments of *cache_name*, leaving out the slabs *spans*."""
    kept = [a for a in oracle.allocated_objects(prog, cache_name)
            if not any(lo <= a < hi for lo, hi in spans)]  # fmt: skip
    size = oracle.object_size(prog, cache_name)
    return len(kept), dict(oracle.fragment_objects(prog, kept, size, 3))


def cpu_state(prog: drgn.Program, cache_name: str, cpu: int) -> drgn.Object:
    return per_cpu_ptr(find_slab_cache(prog, cache_name).cpu_slab, cpu)


def freelist_cache(prog: drgn.Program, cpu: int) -> str:
    """A planted cache whose lockless freelist on *cpu* holds objects."""
    for name in CACHES:
        if cpu_state(prog, name, cpu).freelist:
            return name
    pytest.fail(f"no planted cache has objects on cpu {cpu}'s freelist")


def encoded(cache: drgn.Object, where: int, target: int) -> bytes:
    """The free pointer stored at *where* that decodes to *target* (hardened, with swab)."""
    return struct.pack("<Q", target ^ cache.random.value_() ^ swab64(where))


@pytest.mark.parametrize("cpu", CPUS)
@pytest.mark.parametrize("damage", ["loop", "outside"])
def test_broken_cpu_freelist(
    sample_manifest: dict[str, Any], prog: drgn.Program, damaged: Path, cpu: int, damage: str
) -> None:
    """
    The head of a CPU's freelist points at itself (a loop) or at an allocated object of
    another slab (drgn's helper would take that object, and what follows it, for free):
    the CPU's active slab is left out of the walk and named; the rest is exact.
    """
    name = freelist_cache(prog, cpu)
    cache = find_slab_cache(prog, name)
    this = cpu_state(prog, name, cpu)
    head = this.freelist.value_()
    span = slab_span(prog, cache, oracle.cpu_active_slab(this))
    if damage == "loop":
        target = head
    else:
        target = next(a for a in oracle.allocated_objects(prog, name)
                      if not span[0] <= a < span[1])  # fmt: skip
    where = head + cache.offset.value_()
    _, segments = read_segments(damaged)
    phys = virt_to_phys(prog, where).value_()
    original = read_phys(damaged, segments, phys, 8)
    patch(damaged, segments, phys, encoded(cache, where, target))
    try:
        code, report, stderr = mine_json(damaged, sample_manifest["vmlinux"], name)
    finally:
        patch(damaged, segments, phys, original)
    assert code == 0, stderr
    assert report is not None
    errors = report["scan"]["cpu_freelist_errors"]
    why = "loops" if damage == "loop" else "points outside its active slab"
    active = oracle.cpu_active_slab(this).value_()
    assert any(e.startswith(f"{name} cpu {cpu}: freelist {why}") and
               f"active slab {active:#x} is left out" in e for e in errors), errors
    assert not any(f" cpu {other}:" in e for e in errors for other in CPUS if other != cpu)
    objects, fragments = expected_without(prog, name, [span])
    assert report["scan"]["objects_scanned"] == objects
    assert {f["text"]: f["objects"] for f in report["fragments"]} == fragments
    assert report["cache"]["allocated_from"] == "lists"
    assert report["cache"]["allocated_exact"] is False


def partial_cache(prog: drgn.Program, cpu: int) -> str:
    """A planted cache with a slab on *cpu*'s partial list."""
    for name in CACHES:
        if cpu_state(prog, name, cpu).partial:
            return name
    pytest.fail(f"no planted cache has a slab on cpu {cpu}'s partial list")


@pytest.mark.parametrize("cpu", CPUS)
def test_looping_cpu_partial_list(
    sample_manifest: dict[str, Any], prog: drgn.Program, damaged: Path, cpu: int
) -> None:
    """
    A CPU's first partial slab points back at itself: the walk (which finds slabs in the
    page array) stays exact and says so; the list's count of free objects is named as not
    exact, in ``mine`` and in ``caches``.
    """
    name = partial_cache(prog, cpu)
    first = cpu_state(prog, name, cpu).partial
    where = first.next.address_of_().value_()
    phys = follow_phys(prog["init_mm"].address_of_(), where).value_()
    _, segments = read_segments(damaged)
    original = read_phys(damaged, segments, phys, 8)
    patch(damaged, segments, phys, struct.pack("<Q", first.value_()))
    try:
        code, report, stderr = mine_json(damaged, sample_manifest["vmlinux"], name)
        listing = subprocess.run(
            [sys.executable, "-m", "dumpminer.cli", "caches", str(damaged),
             "--vmlinux", sample_manifest["vmlinux"], "--format", "json"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        table = subprocess.run(
            [sys.executable, "-m", "dumpminer.cli", "caches", str(damaged),
             "--vmlinux", sample_manifest["vmlinux"]],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    finally:
        patch(damaged, segments, phys, original)
    assert code == 0, stderr
    assert table.returncode == 0, table.stderr
    assert any(line.startswith(f"{name}: allocated ") and " is not exact: " in line
               and f"cpu {cpu}: partial list loops" in line
               for line in table.stdout.splitlines()), table.stdout[-2000:]  # fmt: skip
    assert report is not None
    errors = report["scan"]["cpu_freelist_errors"]
    assert any(e.startswith(f"{name} cpu {cpu}: partial list loops after 1 slabs")
               for e in errors), errors  # fmt: skip
    objects, fragments = expected_without(prog, name, [])
    assert report["scan"]["objects_scanned"] == objects == report["cache"]["allocated"]
    assert {f["text"]: f["objects"] for f in report["fragments"]} == fragments
    assert report["cache"]["allocated_from"] == "walk"
    assert listing.returncode == 0, listing.stderr
    row = next(r for r in json.loads(listing.stdout)["caches"] if r["name"] == name)
    assert row["allocated_exact"] is False
    assert f"cpu {cpu}: partial list loops" in row["allocated_damage"]


@pytest.mark.parametrize("cpu", CPUS)
def test_missing_per_cpu_area(
    sample_manifest: dict[str, Any], prog: drgn.Program, elf: str, tmp_path: Path, cpu: int
) -> None:
    """
    The dump lacks the page of CPU *cpu*'s per-CPU area that holds kmalloc-32's
    ``struct kmem_cache_cpu``: its active slab and lockless freelist are unknown. The
    frozen slabs no other CPU holds (its active slab, and before 6.8 its partial slabs)
    are left out and named; every other object is counted exactly.
    """
    name = "kmalloc-32"
    cache = find_slab_cache(prog, name)
    this = cpu_state(prog, name, cpu)
    page = virt_to_phys(prog, this.value_()).value_() & ~0xFFF
    copy = tmp_path / "no-percpu.vmcore"
    without_pages(elf, copy, [page])
    code, report, stderr = mine_json(copy, sample_manifest["vmlinux"], name)
    assert code == 0, stderr
    assert report is not None
    errors = report["scan"]["cpu_freelist_errors"]
    assert any(e.startswith(f"{name} cpu {cpu}: per-CPU area unreadable") for e in errors)
    # The oracle: the CPU's active slab and its frozen partial slabs (frozen until 6.8).
    lost = [oracle.cpu_active_slab(this)]
    slab = this.partial.read_()
    while slab:
        if slab.frozen:
            lost.append(slab)
        slab = slab.next.read_()
    named = [e for e in errors if "frozen slab " in e]
    assert len(named) == len(lost), named
    assert all(any(f"frozen slab {s.value_():#x} " in e for e in named) for s in lost), named
    objects, fragments = expected_without(prog, name, [slab_span(prog, cache, s) for s in lost])
    assert report["scan"]["objects_scanned"] == objects
    assert {f["text"]: f["objects"] for f in report["fragments"]} == fragments
    assert report["cache"]["allocated_exact"] is False


def test_ninety_percent_elf_copy(
    sample_manifest: dict[str, Any], elf: str, tmp_path: Path
) -> None:
    """
    A copy of the ELF dump cut at 90% loses the top tenth of memory: node 1's page array
    and the per-CPU areas of CPUs 2 and 3 (node 1's); if KASLR put the kernel image
    there, the copy keeps it. The run goes on (exit 10: partial, not
    9), names the CPUs whose per-CPU areas are missing, and walks what it reaches;
    ``caches`` lists every cache it can read (exit 0), naming what each count misses.
    """
    cut = tmp_path / "cut.vmcore"
    size = Path(elf).stat().st_size
    _, segments = read_segments(elf)
    ram = max((s for s in segments if s.type == PT_LOAD and s.filesz >= 64 << 20),
              key=lambda s: s.paddr)  # node 1's RAM: the top of memory  # fmt: skip
    top = ram.paddr + ram.filesz
    lost_from = top - (size - size * 9 // 10)
    # KASLR may put the kernel image itself in the top tenth (then nothing can be read,
    # and exit 9 is right): keep it, as a dump of that boot would have to, by storing
    # its pages before the cut.
    prog = oracle.open_prog(elf, sample_manifest["vmlinux"])
    mm = prog["init_mm"].address_of_()
    text, end = (follow_phys(mm, prog.symbol(name).address).value_() for name in ("_text", "_end"))
    text, end = text & ~0xFFF, (end + 0xFFF) & ~0xFFF
    if end <= lost_from or text >= top:
        moved = [(lost_from, top)]
    else:
        moved = [(lo, hi) for lo, hi in ((lost_from, text), (end, top)) if lo < hi]
    moved_at = relayout(elf, cut, moved)
    os.truncate(cut, moved_at)
    code, report, stderr = mine_json(cut, sample_manifest["vmlinux"], "kmalloc-32")
    assert code == 10, stderr
    assert report is not None and report["partial"] is True
    errors = report["scan"]["cpu_freelist_errors"]
    for cpu in (2, 3):
        assert any(e.startswith(f"kmalloc-32 cpu {cpu}: per-CPU area unreadable")
                   for e in errors), errors  # fmt: skip
    assert report["scan"]["objects_scanned"] > 0
    assert "page array" in report["progress"]["incomplete_dump"]
    # caches lists what it can read, and says which counts are not exact and why.
    listing = subprocess.run(
        [sys.executable, "-m", "dumpminer.cli", "caches", str(cut),
         "--vmlinux", sample_manifest["vmlinux"], "--format", "json"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    row = next(r for r in json.loads(listing.stdout)["caches"] if r["name"] == "kmalloc-32")
    assert row["allocated_exact"] is False
    assert "cpu 2: per-CPU area unreadable" in row["allocated_damage"]
