"""
The probe for pointer noise (dumpminer/scan/pointernoise.py): runs made of kernel
pointers' bytes, counted on bytes and on the real seed sample against drgn's
own slab helpers, and the decision ``mine`` takes from them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from functools import cache
from typing import Any

import drgn
import numpy as np
import oracle
import pytest
from dumpminer.scan.pointernoise import (
    PROBE_MIN_SLABS,
    probe_pages,
    probe_pointer_noise,
    walk_estimate,
)

import dumpminer
from dumpminer.extract.pointers import kernel_pointer_bytes, mask_kernel_pointers
from dumpminer.report.json import to_json_dict
from dumpminer.scan import pointernoise
from dumpminer.slub.caches import resolve_caches
from dumpminer.slub.walk import SlabPage, SlabPages, WalkStats, find_slab_pages

MIN_LENGTH = 3


def _word(value: int) -> bytes:
    return value.to_bytes(8, "little")


# --- On bytes ----------------------------------------------------------------------


def test_kernel_pointer_bytes_keeps_only_words_holding_kernel_addresses() -> None:
    pointer = _word(0xFFFF_8B31_6162_6300)  # low bytes "\0cba1" then 0x8b: printable "cba1"
    user = _word(0x0000_7F31_6162_6364)  # a user address with printable bytes: not kept
    text = b"abcdefgh"
    row = pointer + user + text + b"xyz"  # 3 tail bytes after the last whole word
    rows = np.frombuffer(row * 2, np.uint8).reshape(2, len(row))
    kept = kernel_pointer_bytes(rows)
    assert kept.tobytes() == (pointer + bytes(len(row) - 8)) * 2
    # The two halves of a row: what masking keeps and what it blanks.
    masked = mask_kernel_pointers(rows)
    width = len(row) // 8 * 8
    assert not (masked[:, :width] & kept[:, :width]).any()
    assert ((masked | kept)[:, :width] == rows[:, :width]).all()


def test_kernel_pointer_bytes_of_empty_and_narrow_rows() -> None:
    assert kernel_pointer_bytes(np.zeros((0, 16), np.uint8)).shape == (0, 16)
    narrow = np.full((3, 5), ord("a"), np.uint8)
    assert not kernel_pointer_bytes(narrow).any()


def test_walk_estimate_scales_the_runs_of_one_slab_only() -> None:
    # Runs seen in one probed slab only may be local: each share holds as many.
    assert walk_estimate(1000, 1000, 100.0) == 100_000
    # Runs seen in several probed slabs recur: the walk meets them again.
    assert walk_estimate(1000, 0, 100.0) == 1000
    assert walk_estimate(1000, 400, 10.0) == 600 + 4000
    # A probe of everything is exact.
    assert walk_estimate(1000, 400, 1.0) == 1000
    assert walk_estimate(0, 0, 50.0) == 0


def _pages(n: int) -> SlabPages:
    return SlabPages.from_pages(
        SlabPage(0xFFFF_EA00_0000_0000 + 64 * i, 0x1000 + i, 0xFFFF_8880_0000_0000, 0, 128)
        for i in range(n)
    )


def test_probe_pages_are_an_even_spread() -> None:
    pages = _pages(PROBE_MIN_SLABS * 10)
    probed = probe_pages(pages, 0.25)
    assert len(probed) == len(pages) // 4
    steps = np.diff(probed.pfn)
    assert probed.pfn[0] == pages.pfn[0] and probed.pfn[-1] == pages.pfn[-1]
    assert steps.min() >= 3 and steps.max() <= 5
    # At least PROBE_MIN_SLABS; all of them when there are no more.
    assert len(probe_pages(pages, 0.0001)) == PROBE_MIN_SLABS
    few = _pages(PROBE_MIN_SLABS - 1)
    assert probe_pages(few, 0.01) is few


# --- On the seed sample, held to drgn's helpers -------------------------------------------


@cache
def _oracle_prog(vmcore: str, vmlinux: str) -> drgn.Program:
    """The oracle's own drgn program: opened by tests/oracle.py, not by dumpminer."""
    return oracle.open_prog(vmcore, vmlinux)


@cache
def _oracle_runs(vmcore: str, vmlinux: str, cache_name: str) -> set[str]:
    prog = _oracle_prog(vmcore, vmlinux)
    addresses = _oracle_addresses(vmcore, vmlinux, cache_name)
    size = oracle.object_size(prog, cache_name)
    return oracle.pointer_runs(prog, addresses, size, MIN_LENGTH)


@cache
def _opened(vmcore: str, vmlinux: str) -> dumpminer.Dump:
    return dumpminer.open_dump(vmcore, vmlinux)


def _kdump(manifest: dict[str, Any]) -> tuple[str, str]:
    entry = next(d for d in manifest["dumps"] if d["format"] == "kdump")
    return entry["path"], manifest["vmlinux"]


@pytest.mark.parametrize("cache_name", ["kmalloc-32", "kmalloc-64"])
def test_probe_of_a_small_cache_counts_drgns_pointer_runs(
    sample_manifest: dict[str, Any], cache_name: str
) -> None:
    vmcore, vmlinux = _kdump(sample_manifest)
    expected = _oracle_runs(vmcore, vmlinux, cache_name)
    assert expected, "the seed's records hold pointers whose bytes make runs"
    dump = _opened(vmcore, vmlinux)
    caches = resolve_caches(dump.prog, cache_name)
    pages = find_slab_pages(dump.prog, {c.value_() for c in caches}, WalkStats())
    assert len(pages) < PROBE_MIN_SLABS  # so the probe reads every slab: its count is exact
    for bound, masked in ((len(expected) - 1, True), (len(expected), False)):
        noise = probe_pointer_noise(dump.prog, caches, pages, MIN_LENGTH, bound)
        assert noise is not None
        assert noise.slabs_probed == len(pages)
        assert noise.runs_seen == noise.runs_estimated == len(expected)
        assert noise.objects_probed == len(_oracle_addresses(vmcore, vmlinux, cache_name))
        assert (noise.masked, noise.threshold) == (masked, bound)
    # No bound, runs longer than a pointer's 6 printable bytes, or too few
    # words for their runs to reach the bound: no probe.
    assert probe_pointer_noise(dump.prog, caches, pages, MIN_LENGTH, None) is None
    assert probe_pointer_noise(dump.prog, caches, pages, 7, 1) is None
    assert probe_pointer_noise(dump.prog, caches, pages, 6, 1) is not None
    words = max(c.object_size.value_() for c in caches) // 8
    most = 2 * words * pages.total_objects()
    assert probe_pointer_noise(dump.prog, caches, pages, MIN_LENGTH, most) is None


def test_probe_of_a_share_scales_what_it_saw(
    sample_manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    vmcore, vmlinux = _kdump(sample_manifest)
    dump = _opened(vmcore, vmlinux)
    caches = resolve_caches(dump.prog, "kmalloc-32")
    pages = find_slab_pages(dump.prog, {c.value_() for c in caches}, WalkStats())
    monkeypatch.setattr(pointernoise, "PROBE_MIN_SLABS", 8)
    monkeypatch.setattr(pointernoise, "PROBE_FRACTION", 0.25)
    noise = probe_pointer_noise(dump.prog, caches, pages, MIN_LENGTH, 1)
    assert noise is not None
    probed = probe_pages(pages)
    assert noise.slabs_probed == len(probed) == math.ceil(len(pages) / 4)
    # The oracle's runs in the objects of the probed slabs (order-0 slabs:
    # an object is in the slab of its page frame).
    prog = _oracle_prog(vmcore, vmlinux)
    base = prog["page_offset_base"].value_()
    frames = set(probed.pfn.tolist())
    inside = [
        a for a in _oracle_addresses(vmcore, vmlinux, "kmalloc-32") if (a - base) >> 12 in frames
    ]
    size = oracle.object_size(prog, "kmalloc-32")
    in_frame: dict[int, list[int]] = {}
    for address in inside:
        in_frame.setdefault((address - base) >> 12, []).append(address)
    per_slab = [oracle.pointer_runs(prog, a, size, MIN_LENGTH) for a in in_frame.values()]
    slabs_holding = Counter(run for runs in per_slab for run in runs)
    in_one = sum(1 for n in slabs_holding.values() if n == 1)
    assert noise.objects_probed == len(inside)
    assert noise.runs_seen == len(slabs_holding) > 0
    assert noise.runs_seen_in_one_slab == in_one
    scale = pages.total_objects() / probed.total_objects()
    assert noise.runs_estimated == len(slabs_holding) - in_one + math.ceil(in_one * scale)


@cache
def _oracle_addresses(vmcore: str, vmlinux: str, cache_name: str) -> list[int]:
    return oracle.allocated_objects(_oracle_prog(vmcore, vmlinux), cache_name)


def _comparable(report: dumpminer.Report) -> dict[str, Any]:
    data = to_json_dict(report)
    for key in ("seconds", "pointer_noise"):
        data["scan"].pop(key)
    return data


def test_mine_blanks_pointers_only_when_their_runs_swamp_the_bound(
    sample_manifest: dict[str, Any],
) -> None:
    vmcore, vmlinux = _kdump(sample_manifest)
    runs = len(_oracle_runs(vmcore, vmlinux, "kmalloc-32"))
    dump = _opened(vmcore, vmlinux)

    def mined(**options: Any) -> dumpminer.Report:
        return dumpminer.mine(dump.prog, "kmalloc-32", dump=dump, workers=1, **options)

    # Under the bound the raw counts stay: the report is the --keep-pointers one.
    raw = mined(max_fragments=runs)
    assert raw.scan.pointer_noise is not None and not raw.scan.pointer_noise.masked
    assert not raw.scan.pointers_masked
    assert _comparable(raw) == _comparable(mined(max_fragments=runs, mask_pointers=False))
    # Over it, the walk is the --mask-pointers one, and the report says why.
    auto = mined(max_fragments=runs - 1)
    assert auto.scan.pointer_noise is not None and auto.scan.pointer_noise.masked
    assert auto.scan.pointers_masked
    assert _comparable(auto) == _comparable(mined(max_fragments=runs - 1, mask_pointers=True))
    table = dumpminer.render(auto, "table")
    assert f"POINTERS BLANKED: their bytes would make ~{runs} distinct runs" in table
    # Asked either way, no probe is run.
    assert mined(max_fragments=runs - 1, mask_pointers=False).scan.pointer_noise is None


def test_cli_keep_and_mask_pointers(sample_manifest: dict[str, Any], tmp_path: Any) -> None:
    vmcore, vmlinux = _kdump(sample_manifest)
    runs = len(_oracle_runs(vmcore, vmlinux, "kmalloc-32"))
    base = [sys.executable, "-m", "dumpminer", "mine", vmcore, "--vmlinux", vmlinux,
            "--cache", "kmalloc-32", "--format", "json", "--quiet",
            "--max-fragments", str(runs - 1)]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def scan(*extra: str) -> dict[str, Any]:
        out = tmp_path / "report.json"
        done = subprocess.run([*base, *extra, "-o", str(out)], env=env, capture_output=True)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(out.read_text())["scan"])

    auto, keep = scan(), scan("--keep-pointers")
    assert auto["pointers_masked"] and auto["pointer_noise"]["masked"]
    assert auto["pointer_noise"]["runs_estimated"] == runs
    assert not keep["pointers_masked"] and keep["pointer_noise"] is None
    asked = scan("--mask-pointers")
    assert asked["pointers_masked"] and asked["pointer_noise"] is None
    page = tmp_path / "report.html"
    done = subprocess.run([*base, "--format", "html", "-o", str(page)], env=env)
    assert done.returncode == 0
    assert f"their bytes would make ~{runs} distinct runs" in page.read_text()
    both = subprocess.run([*base, "--keep-pointers", "--mask-pointers"], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    assert "Traceback" not in both.stderr
