"""
``dumpminer mine`` on the real seed sample, held to drgn's own slab helpers.

Every dump of the sample (QEMU kdump, ELF, makedumpfile -d 31, -d 23 on 6.12) on every
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

import drgn
import oracle
import pytest
from drgn.helpers.linux.slab import find_slab_cache

import dumpminer
from dumpminer.report.json import to_json_dict
from dumpminer.slub.walk import WalkStats, find_slab_pages, walk_slabs

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
def _oracle_prog(vmcore: str, vmlinux: str) -> drgn.Program:
    """The oracle's own drgn program: opened by tests/oracle.py, not by dumpminer."""
    return oracle.open_prog(vmcore, vmlinux)


@cache
def _addresses(vmcore: str, vmlinux: str, cache_name: str) -> list[int]:
    return oracle.allocated_objects(_oracle_prog(vmcore, vmlinux), cache_name)


@cache
def _oracle(
    vmcore: str, vmlinux: str, cache_name: str, min_length: int = MIN_LENGTH
) -> tuple[list[int], Counter[str], int]:
    """Allocated object addresses, objects per fragment, allocated count: drgn's way."""
    prog = _oracle_prog(vmcore, vmlinux)
    addresses = _addresses(vmcore, vmlinux, cache_name)
    size = oracle.object_size(prog, cache_name)
    objects = oracle.fragment_objects(prog, addresses, size, min_length)
    return addresses, objects, oracle.allocated_count(prog, cache_name)


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
    path, vmlinux = dump_entry["path"], dump_entry["vmlinux"]
    prog = _oracle_prog(path, vmlinux)
    kernel_own = oracle.foreign_fragments(
        prog,
        _addresses(path, vmlinux, cache_name),
        oracle.object_size(prog, cache_name),
        planted["magic"],
        MIN_LENGTH,
    )
    for text, count in planted["strings"].items():
        assert found[text]["objects"] == count + kernel_own[text], text
        assert found[text]["offsets"].get(str(planted["string_offset"])) == count, text
    clusters = {c["template"]: c for c in report["clusters"]}
    for template, count in planted.get("templates", {}).items():
        cluster = clusters[template]
        extra = sum(kernel_own[m["text"]] for m in cluster["members"])
        assert cluster["objects"] == count + extra, template
        assert cluster["distinct_members"] >= 2


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


def test_workers_are_separate_processes(sample_manifest: dict[str, Any]) -> None:
    """Two workers really run: two processes besides this one, every object walked once."""
    from dumpminer.scan.engine import PassOptions
    from dumpminer.scan.workers import mine_in_workers
    from dumpminer.slub.caches import resolve_caches

    entry = next(d for d in _dumps(sample_manifest) if d["format"] == "kdump")
    dump = _opened(entry["path"], sample_manifest["vmlinux"])
    caches = resolve_caches(dump.prog, "kmalloc-32")
    pages = find_slab_pages(dump.prog, {c.value_() for c in caches}, WalkStats())
    result = mine_in_workers(dump, caches, pages, PassOptions(), 2, lambda objects: None)
    assert len(set(result.processes)) == 2 and os.getpid() not in result.processes
    prog = oracle.open_prog(entry["path"], sample_manifest["vmlinux"])
    assert result.stats.objects_scanned == oracle.allocated_count(prog, "kmalloc-32")


def _kdump(manifest: dict[str, Any]) -> tuple[str, str]:
    entry = next(d for d in _dumps(manifest) if d["format"] == "kdump")
    return entry["path"], manifest["vmlinux"]


def _context_oracle(path: str, vmlinux: str, before: int, after: int) -> Counter[str]:
    prog = _oracle_prog(path, vmlinux)
    addresses = _addresses(path, vmlinux, "kmalloc-32")
    size = oracle.object_size(prog, "kmalloc-32")
    return oracle.context_runs(prog, addresses, size, before, after, MIN_LENGTH)


def _in_context(report: dict[str, Any]) -> dict[str, int]:
    return {f["text"]: f["in_context"] for f in report["fragments"] if f["in_context"]}


def _in_objects(report: dict[str, Any]) -> dict[str, int]:
    return {f["text"]: f["objects"] for f in report["fragments"] if f["objects"]}


@pytest.mark.parametrize(("before", "after"), [(16, 16), (0, 40), (24, 0), (100, 3)])
def test_context_counts_equal_oracle(
    sample_manifest: dict[str, Any], before: int, after: int
) -> None:
    """in_context counts the runs in the windows around each allocated object, as strings would."""
    path, vmlinux = _kdump(sample_manifest)
    dump = _opened(path, vmlinux)
    report = to_json_dict(
        dumpminer.mine(dump.prog, "kmalloc-32", before=before, after=after, dump=dump)
    )
    expected = _context_oracle(path, vmlinux, before, after)
    assert sum(expected.values()) > 1000  # the neighbours' records are in the windows
    assert _in_context(report) == dict(expected)
    # The context is counted apart: the objects' own counts do not change.
    assert _in_objects(report) == dict(_oracle(path, vmlinux, "kmalloc-32")[1])
    assert report["scan"]["context_before"] == before
    assert report["scan"]["context_after"] == after


def test_context_through_the_cli(sample_manifest: dict[str, Any], tmp_path: Any) -> None:
    """--context N is --before N --after N; --before/--after alone, as asked."""
    path, vmlinux = _kdump(sample_manifest)
    base = [sys.executable, "-m", "dumpminer.cli", "mine", path, "--vmlinux", vmlinux]
    base += ["--cache", "kmalloc-32", "--format", "json", "--quiet"]
    for flags, before, after in ((["--context", "24"], 24, 24), (["--after", "8"], 0, 8)):
        out = tmp_path / "r.json"
        done = subprocess.run([*base, *flags, "-o", str(out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        report = json.loads(out.read_text())
        expected = _context_oracle(path, vmlinux, before, after)
        assert sum(expected.values()) > 0
        assert _in_context(report) == dict(expected), flags


@pytest.mark.parametrize("min_length", [1, 5, 9])
def test_min_length_equals_oracle(sample_manifest: dict[str, Any], min_length: int) -> None:
    """Other shortest-run lengths than the default 3 count what strings -n N would."""
    path, vmlinux = _kdump(sample_manifest)
    dump = _opened(path, vmlinux)
    report = to_json_dict(dumpminer.mine(dump.prog, "kmalloc-32", min_length=min_length, dump=dump))
    expected = _oracle(path, vmlinux, "kmalloc-32", min_length)[1]
    assert _in_objects(report) == dict(expected)
    assert min(len(text) for text in expected) >= min_length
    assert report["scan"]["min_length"] == min_length


def test_min_length_through_the_cli(sample_manifest: dict[str, Any], tmp_path: Any) -> None:
    path, vmlinux = _kdump(sample_manifest)
    out = tmp_path / "r.json"
    args = ["mine", path, "--vmlinux", vmlinux, "--cache", "kmalloc-32", "--min-length", "6"]
    args += ["--format", "json", "--quiet", "-o", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "dumpminer.cli", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert _in_objects(report) == dict(_oracle(path, vmlinux, "kmalloc-32", 6)[1])
    assert "tmp" not in _in_objects(report) and "usr" not in _in_objects(report)
