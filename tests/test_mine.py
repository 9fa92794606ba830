"""
``dumpminer mine`` on the real seed sample, held to drgn's own slab helpers.

Every dump of the sample (QEMU kdump, ELF, makedumpfile -d 31) on every
kernel series is mined, and the report is compared with an oracle that uses
only drgn's helpers: ``slab_cache_usage``, ``slab_cache_for_each_allocated_object``
and ``prog.read``, and with what the sample builder planted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from functools import cache
from typing import Any

import pytest
from drgn.helpers.linux.slab import (
    find_slab_cache,
    slab_cache_for_each_allocated_object,
    slab_cache_usage,
)

import dumpminer
from dumpminer.fragments import printable_runs
from dumpminer.report import to_json_dict
from dumpminer.walk import WalkStats, find_slab_pages, walk_slabs

MIN_LENGTH = 3
STORY = ["sbin/*agt/", "t.point.*", "@Vv*/", "tmp", "usr"]


@cache
def _opened(vmcore: str, vmlinux: str) -> dumpminer.Dump:
    return dumpminer.open_dump(vmcore, vmlinux)


@cache
def _mined(vmcore: str, vmlinux: str, cache_name: str) -> dict[str, Any]:
    dump = _opened(vmcore, vmlinux)
    return to_json_dict(dumpminer.mine(dump.prog, cache_name, dump=dump))


@cache
def _oracle(vmcore: str, vmlinux: str, cache_name: str) -> tuple[list[int], Counter[str], int]:
    """Allocated object addresses, objects per fragment, allocated count: drgn's way."""
    prog = _opened(vmcore, vmlinux).prog
    slab_cache = find_slab_cache(prog, cache_name)
    size = slab_cache.object_size.value_()
    usage = slab_cache_usage(slab_cache)
    addresses = []
    objects: Counter[str] = Counter()
    for obj in slab_cache_for_each_allocated_object(slab_cache, "void"):
        address = obj.value_()
        addresses.append(address)
        data = prog.read(address, size)
        objects.update({text.decode() for _, text in printable_runs(data, MIN_LENGTH)})
    return sorted(addresses), objects, usage.num_objs - usage.free_objs


def _dumps(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return list(manifest["dumps"])


@pytest.fixture(params=["kdump", "elf", "makedumpfile"])
def dump_entry(request: pytest.FixtureRequest, sample_manifest: dict[str, Any]) -> dict[str, Any]:
    entry = next(d for d in _dumps(sample_manifest) if d["format"] == request.param)
    return {**entry, "vmlinux": sample_manifest["vmlinux"], "manifest": sample_manifest}


@pytest.mark.parametrize("merge_full", [False, True], ids=["slab-by-slab", "merged-runs"])
@pytest.mark.parametrize("cache_name", ["kmalloc-32", "kmalloc-64"])
def test_walker_finds_exactly_drgns_objects(
    dump_entry: dict[str, Any], cache_name: str, merge_full: bool
) -> None:
    dump = _opened(dump_entry["path"], dump_entry["vmlinux"])
    slab_cache = find_slab_cache(dump.prog, cache_name)
    stats = WalkStats()
    walked = list(walk_slabs(dump.prog, [slab_cache], stats=stats, merge_full=merge_full))
    ours = sorted(
        slab.object_address(i) for slab in walked for i in range(slab.objects) if slab.allocated[i]
    )
    theirs, _, allocated = _oracle(dump_entry["path"], dump_entry["vmlinux"], cache_name)
    assert ours == theirs
    assert len(ours) == allocated == stats.objects_scanned
    assert stats.slabs == len(find_slab_pages(dump.prog, {slab_cache.value_()}, WalkStats()))
    if merge_full:  # The leak fills whole slabs: most are read in runs.
        assert len(walked) < stats.slabs / 2


@pytest.mark.parametrize("cache_name", ["kmalloc-32", "kmalloc-64"])
def test_counts_equal_drgn_oracle(dump_entry: dict[str, Any], cache_name: str) -> None:
    report = _mined(dump_entry["path"], dump_entry["vmlinux"], cache_name)
    addresses, oracle, allocated = _oracle(dump_entry["path"], dump_entry["vmlinux"], cache_name)
    assert report["cache"]["caches"] == [cache_name]
    assert report["cache"]["allocated"] == allocated
    assert report["scan"]["objects_scanned"] == len(addresses)
    assert report["scan"]["faults"] == 0
    assert report["scan"]["corrupt_slabs"] == 0
    assert {f["text"]: f["objects"] for f in report["fragments"]} == dict(oracle)


@pytest.mark.parametrize("cache_name", ["kmalloc-32", "kmalloc-64"])
def test_planted_strings_have_planted_counts(dump_entry: dict[str, Any], cache_name: str) -> None:
    """Each planted string: planted count, plus only what the kernel itself held."""
    planted = dump_entry["manifest"]["planted"][cache_name]
    report = _mined(dump_entry["path"], dump_entry["vmlinux"], cache_name)
    found = {f["text"]: f for f in report["fragments"]}
    prog = _opened(dump_entry["path"], dump_entry["vmlinux"]).prog
    kernel_own = _kernel_own_fragments(prog, cache_name, planted)
    for text, count in planted["strings"].items():
        assert found[text]["objects"] == count + kernel_own[text], text
        assert found[text]["offsets"].get(str(planted["string_offset"])) == count, text
    clusters = {c["template"]: c for c in report["clusters"]}
    for template, count in planted.get("templates", {}).items():
        cluster = clusters[template]
        extra = sum(kernel_own[m["text"]] for m in cluster["members"])
        assert cluster["objects"] == count + extra, template
        assert cluster["distinct_members"] >= 2


def _kernel_own_fragments(prog: Any, cache_name: str, planted: dict[str, Any]) -> Counter[str]:
    """Fragments in objects that are not the module's records (no magic)."""
    slab_cache = find_slab_cache(prog, cache_name)
    size = slab_cache.object_size.value_()
    magic = int(planted["magic"], 16).to_bytes(2, "little")
    own: Counter[str] = Counter()
    for obj in slab_cache_for_each_allocated_object(slab_cache, "void"):
        data = prog.read(obj.value_(), size)
        if data[2:4] != magic:
            own.update({text.decode() for _, text in printable_runs(data, MIN_LENGTH)})
    return own


def test_story_fragments_lead_the_table(dump_entry: dict[str, Any]) -> None:
    report = _mined(dump_entry["path"], dump_entry["vmlinux"], "kmalloc-32")
    leaders = [c["template"] for c in report["clusters"][: len(STORY) + 1]]
    for text in STORY:
        assert text in leaders
    assert "t.point.<NUM>" in leaders


def _stable(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what may differ between runs and formats."""
    out = json.loads(json.dumps(report))
    out["dump"].pop("path")
    out["dump"].pop("format")
    out["scan"].pop("seconds")
    return out


def test_same_report_in_every_format_and_run(sample_manifest: dict[str, Any]) -> None:
    vmlinux = sample_manifest["vmlinux"]
    reports = []
    for entry in _dumps(sample_manifest):
        dump = _opened(entry["path"], vmlinux)
        reports.append(_stable(to_json_dict(dumpminer.mine(dump.prog, "kmalloc-32", dump=dump))))
    first = _stable(_mined(_dumps(sample_manifest)[0]["path"], vmlinux, "kmalloc-32"))
    assert all(r == first for r in reports)


def test_cli_end_to_end(sample_manifest: dict[str, Any], tmp_path: Any) -> None:
    """The story's command line: old cache name, JSON to a file, table to stdout."""
    entry = next(d for d in _dumps(sample_manifest) if d["format"] == "kdump")
    out = tmp_path / "report.json"
    base = [sys.executable, "-m", "dumpminer.cli", "mine", entry["path"]]
    base += ["--vmlinux", sample_manifest["vmlinux"], "--cache", "size-32"]
    done = subprocess.run(
        [*base, "--format", "json", "-o", str(out), "--quiet"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    report = json.loads(out.read_text())
    assert report["schema"] == "dumpminer.report/1"
    assert report["cache"]["name"] == "size-32"
    assert report["cache"]["caches"] == ["kmalloc-32"]
    table = subprocess.run([*base, "--top", "8", "--quiet"], capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    assert "sbin/*agt/" in table.stdout and "rd -64 0x" in table.stdout
    assert os.listdir(tmp_path) == ["report.json"]


def test_workers_give_the_same_report(sample_manifest: dict[str, Any]) -> None:
    """Two worker processes, each with its own drgn program, merge to the same counts."""
    entry = next(d for d in _dumps(sample_manifest) if d["format"] == "kdump")
    dump = _opened(entry["path"], sample_manifest["vmlinux"])
    split = _stable(to_json_dict(dumpminer.mine(dump.prog, "kmalloc-32", dump=dump, workers=2)))
    assert split == _stable(_mined(entry["path"], sample_manifest["vmlinux"], "kmalloc-32"))
