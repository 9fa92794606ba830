"""
Hostile inputs (issue 6): damaged and wrong dumps, corrupt slabs, wrong
options, signals, untrusted text, fuzzed headers.

The damaged dumps are copies of the real ELF sample (tests/hostile.py patches
them at physical addresses found with drgn on the original). A damaged run is
held to the clean run: its report must equal the clean report minus exactly
the slabs that were damaged, with each of them named.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import default_sigint
from drgn.helpers.linux.cpumask import for_each_possible_cpu
from drgn.helpers.linux.mm import follow_phys, virt_to_phys
from drgn.helpers.linux.percpu import per_cpu_ptr
from drgn.helpers.linux.slab import (
    find_slab_cache,
    for_each_slab_cache,
    slab_cache_pages_per_slab,
)
from hostile import copy, patch, read_phys, read_segments, relayout
from test_dumpinfo import elf_core, kdump

import dumpminer
from dumpminer.clustering.cluster import cluster_fragments
from dumpminer.extract.fragments import Fragment, printable_runs
from dumpminer.report.escape import csv_cell, terminal_escape
from dumpminer.report.json import to_json_dict
from dumpminer.report.model import CacheFacts, DumpFacts, Report, ScanFacts
from dumpminer.report.output import write_atomically
from dumpminer.report.render import render
from dumpminer.slub.walk import WalkStats, _PageFields, cache_layout, find_slab_pages, walk_slabs

CACHE = "kmalloc-32"
MIN_LENGTH = 3
REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 120


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> Any:
    """``python -m dumpminer.cli ARGS`` as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "dumpminer.cli", *args],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=timeout,
    )


def assert_one_line(stderr: str) -> None:
    """A failure is one line on stderr, no traceback, no control character."""
    assert stderr.startswith("dumpminer: "), stderr
    assert stderr.endswith("\n") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    assert not re.search(r"[^\x20-\x7e\n]", stderr), repr(stderr)


def _elf(manifest: dict[str, Any], fmt: str = "elf") -> str:
    return str(next(d for d in manifest["dumps"] if d["format"] == fmt)["path"])


# --------------------------------------------------------------------------
# The clean run, and what each slab adds to it
# --------------------------------------------------------------------------


@cache
def _clean(vmcore: str, vmlinux: str) -> dict[str, Any]:
    """The clean report of CACHE, and each slab's objects and fragment counts."""
    dump = dumpminer.open_dump(vmcore, vmlinux)
    prog = dump.prog
    report = to_json_dict(dumpminer.mine(prog, CACHE, dump=dump))
    slab_cache = find_slab_cache(prog, CACHE)
    size = slab_cache.object_size.value_()
    per_slab: dict[int, tuple[int, Counter[str]]] = {}
    for slab in walk_slabs(prog, [slab_cache]):
        found: Counter[str] = Counter()
        n = 0
        for i in range(slab.objects):
            if slab.allocated[i]:
                n += 1
                start = slab.before + i * slab.layout.stride
                data = slab.data[start : start + size]
                found.update({t.decode() for _, t in printable_runs(data, MIN_LENGTH)})
        per_slab[slab.address] = (n, found)
    layout = cache_layout(slab_cache)
    pages = find_slab_pages(prog, {slab_cache.value_()}, WalkStats())
    # Slabs no per-CPU structure points to and with no free object: nothing
    # but the page array and the walk ever look at them.
    # Nor do they hold what is read before the walk: the caches' names.
    cpu_slabs = set()
    for cpu in for_each_possible_cpu(prog):
        c = per_cpu_ptr(slab_cache.cpu_slab, cpu)
        for member in ("slab", "partial"):
            with contextlib.suppress(LookupError):
                cpu_slabs.add(c.member_(member).value_())
    needed = set(layout.cpu_free)
    needed.update(c.name.value_() for c in for_each_slab_cache(prog))
    pages_per_slab = slab_cache_pages_per_slab(slab_cache)
    quiet = []
    for page in pages:
        if page.freelist or page.address in cpu_slabs:
            continue
        base = pfn_virt(prog, page.pfn)
        if any(base <= p < base + pages_per_slab * 4096 for p in needed):
            continue
        quiet.append((page, 0))
    fields = _PageFields(prog)
    mm = prog["init_mm"].address_of_()
    return {
        "report": report,
        "per_slab": per_slab,
        "quiet": [p for p, _ in quiet],
        "pages_per_slab": pages_per_slab,
        "layout": layout,
        "freelist_phys": {
            p.address: follow_phys(mm, p.address + fields.freelist).value_() for p, _ in quiet
        },
        "objects_field": (fields.objects_word, fields.objects_shift, fields.objects_mask),
        "counters_phys": {
            p.address: follow_phys(mm, p.address + fields.objects_word).value_() for p, _ in quiet
        },
        "virt_to_phys": {
            p.address: virt_to_phys(prog, pfn_virt(prog, p.pfn)).value_() for p, _ in quiet
        },
        "base": {p.address: pfn_virt(prog, p.pfn) for p, _ in quiet},
    }


def pfn_virt(prog: Any, pfn: int) -> int:
    from drgn.helpers.linux.mm import pfn_to_virt

    return int(pfn_to_virt(prog, pfn).value_())


def expected_without(clean: dict[str, Any], gone: list[int]) -> tuple[int, dict[str, int]]:
    """Objects scanned and fragment object counts once the slabs *gone* are left out."""
    counts = Counter({f["text"]: f["objects"] for f in clean["report"]["fragments"]})
    scanned = clean["report"]["scan"]["objects_scanned"]
    for address in gone:
        n, found = clean["per_slab"][address]
        scanned -= n
        counts.subtract(found)
    return scanned, {text: n for text, n in counts.items() if n > 0}


def fragment_counts(report: dict[str, Any]) -> dict[str, int]:
    return {f["text"]: f["objects"] for f in report["fragments"]}


@pytest.fixture
def clean(sample_manifest: dict[str, Any]) -> dict[str, Any]:
    return _clean(_elf(sample_manifest), sample_manifest["vmlinux"])


# --------------------------------------------------------------------------
# 1. Faults: missing pages, truncated files
# --------------------------------------------------------------------------


def test_truncated_copy_loses_exactly_the_cut_slabs(
    sample_manifest: dict[str, Any], clean: dict[str, Any], tmp_path: Path
) -> None:
    """A copy cut short loses the slabs stored past the cut, and only them."""
    victims = clean["quiet"][-5:]
    assert len(victims) == 5
    size = clean["pages_per_slab"] * 4096
    ranges = sorted((p.pfn * 4096, p.pfn * 4096 + size) for p in victims)
    dst = tmp_path / "relaid.vmcore"
    moved_at = relayout(_elf(sample_manifest), dst, ranges)
    # Cut in the middle of the third moved slab: it and the two after are lost.
    os.truncate(dst, moved_at + 2 * size + size // 2)
    out = tmp_path / "r.json"
    done = run_cli(
        "mine", str(dst), "--vmlinux", sample_manifest["vmlinux"], "--cache", CACHE,
        "--format", "json", "-o", str(out), "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report = json.loads(out.read_text())
    lost = sorted(p.address for p in victims if p.pfn * 4096 >= ranges[2][0])
    assert len(lost) == 3
    scan = report["scan"]
    assert scan["faults"] == 3
    assert scan["fault_addresses"] == [f"{a:#x}" for a in lost]
    assert scan["corrupt_slabs"] == 0
    scanned, counts = expected_without(clean, lost)
    assert 0 < scan["objects_scanned"] == scanned < clean["report"]["scan"]["objects_scanned"]
    assert scan["slabs"] == clean["report"]["scan"]["slabs"] - 3
    assert fragment_counts(report) == counts
    full = fragment_counts(clean["report"])
    assert all(n <= full[text] for text, n in counts.items())
    # The report is whole and says what the cache holds, as the clean one: counted from
    # the lists, as the walk could not read every slab.
    assert report["partial"] is False
    assert report["cache"] == {**clean["report"]["cache"], "allocated_from": "lists"}


def test_elf_cut_at_60_percent_is_one_line_error_or_partial(
    sample_manifest: dict[str, Any], tmp_path: Path
) -> None:
    """
    Each NUMA node keeps its part of the page array (and memblock's allocations, the
    slab caches' names among them) near the top of its memory. The samples' two nodes
    split the guest in halves, so a plain cut at 60 % loses node 1's top: with the
    caches' names there, nothing can be walked (exit 9, one line: the cache's pages are
    unreadable, or the names of some caches are lost and it may be one of them); with
    them in node 0, the report covers node 0's slabs and says the rest is missing (exit 10).
    """
    src = _elf(sample_manifest)
    dst = tmp_path / "cut.vmcore"
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(fin.read(os.path.getsize(src) * 60 // 100))
    done = run_cli("mine", str(dst), "--vmlinux", sample_manifest["vmlinux"], "--cache", CACHE)
    assert done.returncode in (9, 10), done.stderr
    if done.returncode == 9:
        assert_one_line(done.stderr)
        assert "unreadable" in done.stderr or "cut short" in done.stderr, done.stderr
        assert done.stdout == ""
    else:
        assert done.stderr == ""
        assert "PARTIAL: the dump lacks" in done.stdout and "page array" in done.stdout


@pytest.mark.parametrize(("fraction", "codes"), [(0.0001, {4}), (0.3, {4}), (0.97, {4, 9, 10})])
def test_kdump_cut_short(
    sample_manifest: dict[str, Any], tmp_path: Path, fraction: float, codes: set[int]
) -> None:
    """
    Cut in its headers or before the kernel's page tables: 4. Cut near the end (the
    top of node 1, where early allocations go on a 2-node guest): the kernel's page
    tables may be lost with it (4), or the page array and the caches' names (9), or
    only part of the page array (10, a partial report): which, depends on where this
    boot's allocations put them. Each is said in one line, naming the cut.
    """
    src = _elf(sample_manifest, "kdump")
    dst = tmp_path / "cut.vmcore"
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(fin.read(int(os.path.getsize(src) * fraction)))
    done = run_cli("mine", str(dst), "--vmlinux", sample_manifest["vmlinux"], "--cache", CACHE)
    assert done.returncode in codes, done.stderr
    if done.returncode == 10:
        assert "PARTIAL: " in done.stdout and done.stderr == ""
    else:
        assert_one_line(done.stderr)
        assert any(w in done.stderr for w in ("cut short", "truncated", "unreadable")), done.stderr


def test_filtered_dump_keeps_slab_pages(sample_manifest: dict[str, Any]) -> None:
    """The filtered sample (-d 31; -d 23 on 6.12) drops free and cache pages, never slab pages."""
    dump = dumpminer.open_dump(_elf(sample_manifest, "makedumpfile"), sample_manifest["vmlinux"])
    report = to_json_dict(dumpminer.mine(dump.prog, CACHE, dump=dump))
    assert report["scan"]["faults"] == 0
    assert report["scan"]["corrupt_slabs"] == 0
    assert report["scan"]["objects_scanned"] == report["cache"]["allocated"]


# --------------------------------------------------------------------------
# 2. Corrupt freelists
# --------------------------------------------------------------------------


def _swab(value: int) -> int:
    return int.from_bytes(value.to_bytes(8, "little"), "big")


def test_corrupt_freelists_skip_exactly_their_slabs(
    sample_manifest: dict[str, Any], clean: dict[str, Any], tmp_path: Path
) -> None:
    layout = clean["layout"]
    victims = clean["quiet"][3:9]
    dst = copy(_elf(sample_manifest), tmp_path / "corrupt.vmcore")
    _, segments = read_segments(dst)

    def set_freelist(page: Any, value: int) -> None:
        patch(dst, segments, clean["freelist_phys"][page.address], struct.pack("<Q", value))

    def store_next(page: Any, index: int, next_ptr: int) -> None:
        """Store *next_ptr* as object *index*'s free pointer, encoded as the kernel does."""
        where = clean["base"][page.address] + layout.red_left_pad
        where += index * layout.stride + layout.freeptr_offset
        raw = next_ptr
        if layout.freelist_random is not None:
            raw = next_ptr ^ layout.freelist_random ^ _swab(where)
        phys = clean["virt_to_phys"][page.address] + (where - clean["base"][page.address])
        patch(dst, segments, phys, struct.pack("<Q", raw))

    def obj(page: Any, index: int) -> int:
        return int(clean["base"][page.address] + layout.red_left_pad + index * layout.stride)

    outside, misaligned, loop, loop2, garbage, crowded = victims
    # More objects than a slab of this cache holds: reading them would run
    # past the slab into whatever follows.
    _, shift, mask = clean["objects_field"]
    counters_phys = clean["counters_phys"][crowded.address]
    word = struct.unpack("<Q", read_phys(dst, segments, counters_phys, 8))[0]
    word = (word & ~(mask << shift)) | ((layout.objects_per_slab + 1) << shift)
    patch(dst, segments, counters_phys, struct.pack("<Q", word))
    set_freelist(outside, obj(outside, 0) + 64 * 4096)
    set_freelist(misaligned, obj(misaligned, 1) + 1)
    set_freelist(loop, obj(loop, 2))  # object 2 -> object 2 -> ...
    store_next(loop, 2, obj(loop, 2))
    set_freelist(loop2, obj(loop2, 0))  # 0 -> 5 -> 0 -> ...
    store_next(loop2, 0, obj(loop2, 5))
    store_next(loop2, 5, obj(loop2, 0))
    set_freelist(garbage, obj(garbage, 3))
    patch(
        dst,
        segments,
        clean["virt_to_phys"][garbage.address] + obj(garbage, 3) - clean["base"][garbage.address]
        + layout.freeptr_offset,
        b"\x5a\xc3\x11\x99\x42\x17\xee\x01",
    )  # fmt: skip
    dump = dumpminer.open_dump(dst, sample_manifest["vmlinux"])
    report = to_json_dict(dumpminer.mine(dump.prog, CACHE, dump=dump))
    gone = sorted(p.address for p in victims)
    scan = report["scan"]
    assert scan["corrupt_slabs"] == 6
    assert scan["corrupt_slab_addresses"] == [f"{a:#x}" for a in gone]
    assert scan["faults"] == 0
    scanned, counts = expected_without(clean, gone)
    assert scan["objects_scanned"] == scanned
    assert scan["slabs"] == clean["report"]["scan"]["slabs"] - 6
    assert fragment_counts(report) == counts


def test_corrupt_node_list_is_named_not_fatal(
    sample_manifest: dict[str, Any], clean: dict[str, Any], tmp_path: Path
) -> None:
    """
    A cache whose node partial list points nowhere: ``caches`` lists it with its count
    marked not exact and the broken list named; ``mine`` (which finds slabs in the page
    array, not on that list) is exact, and says where ``allocated`` comes from.
    """
    src = _elf(sample_manifest)
    prog = dumpminer.open_dump(src, sample_manifest["vmlinux"]).prog
    victim = find_slab_cache(prog, CACHE)
    head = victim.node[0].partial.address_of_().value_()
    phys = follow_phys(prog["init_mm"].address_of_(), head).value_()
    dst = copy(src, tmp_path / "bad-cache.vmcore")
    _, segments = read_segments(dst)
    patch(dst, segments, phys, struct.pack("<Q", 0x00DEAD0000000100))  # list_head.next
    listing = run_cli(
        "caches", str(dst), "--vmlinux", sample_manifest["vmlinux"], "--format", "json"
    )
    assert listing.returncode == 0, listing.stderr
    doc = json.loads(listing.stdout)
    assert doc["unreadable"] == []
    row = next(c for c in doc["caches"] if c["name"] == CACHE)
    assert row["allocated_exact"] is False
    assert f"{CACHE} node 0 partial" in row["allocated_damage"]
    assert sum(not c["allocated_exact"] for c in doc["caches"]) == 1
    out = tmp_path / "r.json"
    mined = run_cli("mine", str(dst), "--vmlinux", sample_manifest["vmlinux"], "--cache", CACHE,
                    "--format", "json", "-o", str(out))  # fmt: skip
    assert mined.returncode == 0, mined.stderr
    report = json.loads(out.read_text())
    assert report["scan"]["objects_scanned"] == clean["report"]["scan"]["objects_scanned"]
    assert fragment_counts(report) == fragment_counts(clean["report"])
    assert report["cache"]["allocated_from"] == "walk"


# --------------------------------------------------------------------------
# 3. Wrong inputs: one line, the documented code
# --------------------------------------------------------------------------


def _wrong_inputs(manifest: dict[str, Any], tmp: Path) -> list[tuple[str, list[str], int]]:
    vmcore = _elf(manifest, "kdump")
    vmlinux = manifest["vmlinux"]
    text = tmp / "notes.txt"
    text.write_text("just some notes\n")
    noise = tmp / "noise.bin"
    noise.write_bytes(random.Random(6).randbytes(1 << 16))
    arm = tmp / "arm64.vmcore"
    arm.write_bytes(elf_core(machine=183))
    arm_kdump = tmp / "arm64.kdump"
    arm_kdump.write_bytes(kdump(machine="aarch64"))
    empty_dir = tmp / "no-debug"
    empty_dir.mkdir()
    existing_dir = tmp / "a-dir"
    existing_dir.mkdir()
    base = ["--vmlinux", vmlinux, "--cache", CACHE]
    return [
        ("missing vmcore", ["mine", str(tmp / "nope"), *base], 3),
        ("vmcore is a directory", ["mine", str(tmp), *base], 3),
        ("missing vmlinux", ["mine", vmcore, "--vmlinux", str(tmp / "nope"), "--cache", CACHE], 3),
        ("vmlinux is a directory", ["mine", vmcore, "--vmlinux", str(tmp), "--cache", CACHE], 3),
        ("text file", ["mine", str(text), *base], 4),
        ("random bytes", ["mine", str(noise), *base], 4),
        ("empty file", ["mine", os.devnull, *base], 4),
        ("arm64 ELF", ["mine", str(arm), *base], 5),
        ("arm64 kdump", ["mine", str(arm_kdump), *base], 5),
        ("vmlinux is text", ["mine", vmcore, "--vmlinux", str(text), "--cache", CACHE], 6),
        ("--vmlinux and --no-debuginfo", ["mine", vmcore, *base, "--no-debuginfo"], 2),
        ("unknown cache", ["mine", vmcore, "--vmlinux", vmlinux, "--cache", "kmaloc-32"], 7),
        ("output dir missing", ["mine", vmcore, *base, "-o", str(tmp / "no" / "r.json")], 8),
        ("output is a dir", ["mine", vmcore, *base, "-o", str(existing_dir)], 8),
        ("negative before", ["mine", vmcore, *base, "--before", "-1"], 2),
        ("context and before", ["mine", vmcore, *base, "--context", "8", "--before", "2"], 2),
        ("min-length 0", ["mine", vmcore, *base, "--min-length", "0"], 2),
        ("huge context", ["mine", vmcore, *base, "--context", str(1 << 30)], 2),
        ("bad format", ["mine", vmcore, *base, "--format", "nope"], 2),
        ("top not a number", ["mine", vmcore, *base, "--top", "x"], 2),
        ("unknown option", ["mine", vmcore, *base, "--frobnicate"], 2),
        ("no command", [], 2),
        ("caches: missing", ["caches", str(tmp / "nope")], 3),
        ("info: text file", ["info", str(text)], 4),
    ]


def test_wrong_inputs(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    failures = []
    for name, args, code in _wrong_inputs(sample_manifest, tmp_path):
        done = run_cli(*args)
        try:
            assert done.returncode == code, f"exit {done.returncode}"
            assert_one_line(done.stderr)
            assert done.stdout == ""
        except AssertionError as e:
            failures.append(f"{name}: {e}: {done.stderr!r}")
    assert not failures, "\n".join(failures)
    assert sorted(os.listdir(tmp_path)) == [
        "a-dir", "arm64.kdump", "arm64.vmcore", "no-debug", "noise.bin", "notes.txt",
    ]  # fmt: skip


def test_unknown_cache_names_the_closest(sample_manifest: dict[str, Any]) -> None:
    done = run_cli(
        "mine", _elf(sample_manifest, "kdump"), "--vmlinux", sample_manifest["vmlinux"],
        "--cache", "kmaloc-32",
    )  # fmt: skip
    assert done.returncode == 7
    assert "closest: kmalloc-32" in done.stderr


def test_vmlinux_of_another_kernel(sample_manifest: dict[str, Any]) -> None:
    """6.1's dump with 6.12's vmlinux (and the other way): 6, both build IDs named."""
    from conftest import ALL_SERIES, selected_series

    from sample_dumps.build import build_sample

    other = next(s for s in ALL_SERIES if s != sample_manifest["series"])
    if other not in selected_series():
        pytest.skip(f"DUMPMINER_SERIES leaves out {other}")
    theirs = json.loads(Path(build_sample("seed", other)).read_text())
    done = run_cli(
        "mine", _elf(sample_manifest, "kdump"), "--vmlinux", theirs["vmlinux"], "--cache", CACHE
    )
    assert done.returncode == 6
    assert_one_line(done.stderr)
    assert sample_manifest["build_id"] in done.stderr and theirs["build_id"] in done.stderr


def _run_bytes(*args: bytes | str) -> subprocess.CompletedProcess[bytes]:
    """The CLI with arguments that may not be valid text, output as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "dumpminer.cli", *args],
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=TIMEOUT,
    )


def test_control_characters_in_paths_never_reach_the_terminal(tmp_path: Path) -> None:
    evil = os.fsencode(str(tmp_path)) + b"/\xff\x1b[2J\x07\n/r.json"
    done = _run_bytes("mine", b"/no/such\x1b]0;x\x07", "-o", evil)
    assert done.returncode == 8
    assert_one_line(done.stderr.decode("ascii"))
    done = _run_bytes("mine", b"/no/such\x1b]0;x\x07\xff")
    assert done.returncode == 3
    assert_one_line(done.stderr.decode("ascii"))


# --------------------------------------------------------------------------
# 4. Nothing lost: atomic reports, signals
# --------------------------------------------------------------------------


def test_failed_run_leaves_existing_report_intact(
    sample_manifest: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    out.write_text("the previous report\n")
    done = run_cli(
        "mine", _elf(sample_manifest, "kdump"), "--vmlinux", sample_manifest["vmlinux"],
        "--cache", "no-such-cache", "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 7
    assert out.read_text() == "the previous report\n"
    assert os.listdir(tmp_path) == ["report.json"]


def test_write_atomically_interrupted_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r.txt"
    out.write_text("old")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(str(out), "new" * 1000)
    assert out.read_text() == "old"
    assert os.listdir(tmp_path) == ["r.txt"]


#: How long a test waits for a child process to reach a state or exit before it fails.
#: Not a timing assert: the state comes within seconds, and only a hang takes this long.
POLL_DEADLINE = 60.0


def wait_for(reached: Callable[[], bool], what: str, proc: subprocess.Popen[str]) -> None:
    """
    Poll until *reached*() is true. Fail with a message naming *what*, with the child's
    stderr, when *proc* exits first or :data:`POLL_DEADLINE` seconds pass (a hang).
    """
    deadline = time.monotonic() + POLL_DEADLINE
    while not reached():
        if proc.poll() is not None:
            _, stderr = proc.communicate()
            pytest.fail(f"the child exited ({proc.returncode}) before {what}; stderr: {stderr}")
        if time.monotonic() > deadline:
            proc.kill()
            _, stderr = proc.communicate()
            pytest.fail(f"{what}: not seen in {POLL_DEADLINE:.0f} s (a hang?); stderr: {stderr}")
        time.sleep(0.01)


def exit_within_deadline(proc: subprocess.Popen[str], after: str) -> str:
    """The stderr of *proc* once it exits; fail if it has not after :data:`POLL_DEADLINE` s."""
    try:
        _, stderr = proc.communicate(timeout=POLL_DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, stderr = proc.communicate()
        pytest.fail(
            f"the child did not exit within {POLL_DEADLINE:.0f} s of {after} (a hang?); "
            f"stderr: {stderr}"
        )
    return stderr


#: Runs the CLI with every slab read slowed down by 20 ms a slab (runs of
#: full slabs read as one included), so that a signal can land mid-walk on the
#: small seed sample; $MARK holds how many slabs the walk has read so far.
_SLOW_WALK = """
import os, sys, time
import dumpminer.slub.walk as walk
read = 0
def slowed(real, slabs):
    def slow(*args):
        global read
        time.sleep(0.02 * slabs(args))
        result = real(*args)
        read += slabs(args)
        with open(os.environ["MARK"] + ".tmp", "w") as f:
            f.write(str(read))
        os.replace(os.environ["MARK"] + ".tmp", os.environ["MARK"])
        return result
    return slow
walk.read_slab = slowed(walk.read_slab, lambda args: 1)
walk._read_full_run = slowed(walk._read_full_run, lambda args: args[4])
from dumpminer.cli import main
sys.exit(main(sys.argv[1:]))
"""


#: Slabs the slowed walk has read when the mid-walk tests send their signal.
MIDWAY_SLABS = 8


def _slabs_read(mark: Path) -> int:
    """How many slabs the slowed walk says it has read (0 before it starts)."""
    try:
        return int(mark.read_text() or 0)
    except (OSError, ValueError):
        return 0


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_walk_writes_partial_report(
    sample_manifest: dict[str, Any], tmp_path: Path, signum: int, code: int
) -> None:
    out = tmp_path / "r.json"
    mark = tmp_path / "walking"
    args = ["mine", _elf(sample_manifest), "--vmlinux", sample_manifest["vmlinux"]]
    args += ["--cache", CACHE, "--format", "json", "-o", str(out), "--quiet"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WALK, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "MARK": str(mark)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        # Some slabs read, and (20 ms a slab, about 300 slabs) seconds of walk left.
        wait_for(lambda: _slabs_read(mark) >= MIDWAY_SLABS, "the walk went on", proc)
        proc.send_signal(signum)
        stderr = exit_within_deadline(proc, f"signal {signum}")
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    report = json.loads(out.read_text())
    assert report["partial"] is True
    progress = report["progress"]
    # The slab read last when the signal landed may be left uncounted: the
    # walk checks for a signal between reading a slab and counting it.
    assert MIDWAY_SLABS - 1 <= progress["slabs_walked"] < progress["slabs_found"]
    assert report["scan"]["slabs"] == progress["slabs_walked"]
    assert 0 < report["scan"]["objects_scanned"] < report["cache"]["allocated"]
    assert sorted(os.listdir(tmp_path)) == ["r.json", "walking"]


def _mine_signalled(
    script: str, manifest: dict[str, Any], out: Path, signum: int, code: int
) -> None:
    """Mine through *script*, which signals itself, and check the whole report."""
    args = ["mine", _elf(manifest, "kdump"), "--vmlinux", manifest["vmlinux"]]
    args += ["--cache", CACHE, "--format", "json", "-o", str(out), "--quiet"]
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "SIGNUM": str(int(signum))},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=default_sigint,
    )
    assert done.returncode == code, done.stderr
    report = json.loads(out.read_text())
    assert report["partial"] is False
    assert report["scan"]["objects_scanned"] == report["cache"]["allocated"]


#: Sends itself SIGINT (or SIGTERM) while the report is being written.
_SIGNAL_WHILE_WRITING = """
import os, signal, sys, time
import dumpminer.cli as cli
real = cli.write_report
def write(path, text):
    os.kill(os.getpid(), int(os.environ["SIGNUM"]))
    time.sleep(0.2)
    real(path, text)
cli.write_report = write
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_writing_keeps_the_report_whole(
    sample_manifest: dict[str, Any], tmp_path: Path, signum: int, code: int
) -> None:
    out = tmp_path / "r.json"
    out.write_text("old")
    _mine_signalled(_SIGNAL_WHILE_WRITING, sample_manifest, out, signum, code)
    assert os.listdir(tmp_path) == ["r.json"]


#: Sends itself SIGINT (or SIGTERM) after the walk, while fragments are clustered.
_SIGNAL_WHILE_CLUSTERING = """
import os, signal, sys
import dumpminer.cli as cli
miner = sys.modules["dumpminer.pipeline"]
real = miner.cluster_fragments
def cluster(*args, **kwargs):
    os.kill(os.getpid(), int(os.environ["SIGNUM"]))
    return real(*args, **kwargs)
miner.cluster_fragments = cluster
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_after_the_walk_keeps_the_report(
    sample_manifest: dict[str, Any], tmp_path: Path, signum: int, code: int
) -> None:
    """The walk is done: a signal while clustering is held, the whole report written."""
    _mine_signalled(_SIGNAL_WHILE_CLUSTERING, sample_manifest, tmp_path / "r.json", signum, code)


def test_signal_handlers_restored(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    from dumpminer.cli import main

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    out = tmp_path / "r.json"
    args = ["mine", _elf(sample_manifest, "kdump"), "--vmlinux", sample_manifest["vmlinux"]]
    assert main([*args, "--cache", CACHE, "--format", "json", "-o", str(out), "--quiet"]) == 0
    assert main([*args, "--cache", "no-such-cache"]) == 7
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# --------------------------------------------------------------------------
# 5. Untrusted text in every rendering
# --------------------------------------------------------------------------

NASTY = [
    b'=HYPERLINK("http://x","y")',
    b"+1+2",
    b"-2-3",
    b"@SUM(A1)",
    b"\tTAB",
    b"\rCR",
    b'quote " and \\ backslash',
    b"| pipe | *star* _under_ `tick` [a](b) <b>x</b> # h",
    b"\x1b[2J\x1b]0;title\x07clear",
    b"line\nbreak\x00nul\x7fdel",
    b"\x9b31m high \xff bytes",
]


def crafted_report(name: str = "kmalloc-32") -> Report:
    fragments = [
        Fragment(text=t, objects=10 - i, occurrences=10 - i, examples=[0xFFFF888000001000 + i])
        for i, t in enumerate(NASTY)
    ]
    for f in fragments:
        f.offsets[8] = f.occurrences
    return Report(
        dump=DumpFacts(
            path="/tmp/\x1b[31mred\x07",
            osrelease="6.1\x1b[0m",
            format="elf",
            build_id=None,
            vmlinux=None,
            debuginfo="vmlinux",
        ),
        cache=CacheFacts(
            name=name,
            caches=("kmalloc-32\x1b[1m",),
            object_size=32,
            allocated=100,
            total=128,
            slabs=1,
        ),
        scan=ScanFacts(objects_scanned=100, slabs=1, seconds=0.1),
        fragments=fragments,
        clusters=cluster_fragments(fragments),
    )


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\U0010ffff]")


@pytest.mark.parametrize("fmt", ["table", "json", "csv", "markdown"])
@pytest.mark.parametrize("name", ["kmalloc-32", "=cmd|'/c calc'!A1", "\x1b[2Jsize-32\n"])
def test_no_control_character_in_any_rendering(fmt: str, name: str) -> None:
    text = render(crafted_report(name), fmt)
    assert not CONTROL.search(text.replace("\n", "")), repr(CONTROL.search(text.replace("\n", "")))
    assert text.isascii()


def test_json_round_trips_the_bytes() -> None:
    doc = json.loads(render(crafted_report(), "json"))
    texts = {f["text"] for f in doc["fragments"]}
    assert texts == {t.decode("latin-1") for t in NASTY}
    assert doc["dump"]["path"] == "/tmp/\x1b[31mred\x07"


def test_csv_cells_cannot_start_a_formula() -> None:
    rows = list(csv.reader(io.StringIO(render(crafted_report("=1+1"), "csv"))))
    assert rows[0][0] == "cache"
    for row in rows[1:]:
        for cell in row:
            assert not cell or cell[0] not in "=+-@\t\r", row
        assert row[0] == "'=1+1"
    templates = [row[2] for row in rows[1:]]
    # The raw bytes are kept beside the safe form, in hex.
    header = rows[0]
    raw = {bytes.fromhex(row[header.index("template_hex")]) for row in rows[1:]}
    assert raw == {c.template for c in crafted_report().clusters}
    assert b'=HYPERLINK("http://x","y")' in raw
    assert '\'=HYPERLINK("http://x","y")' in templates
    assert "'+1+2" in templates and "'-2-3" in templates and "'@SUM(A1)" in templates
    assert csv_cell("\tTAB") == "\\x09TAB" and csv_cell("\rCR") == "\\x0dCR"


def test_markdown_table_stays_a_table() -> None:
    text = render(crafted_report(), "markdown")
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(crafted_report().clusters)
    for row in rows:
        # Eight columns (the last: what the cluster's words point at).
        assert len(re.findall(r"(?<!\\)\|", row)) == 9, row


def test_terminal_escape() -> None:
    assert terminal_escape("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert terminal_escape("\udcff") == "\\xff"  # an undecodable byte from argv
    assert terminal_escape("é") == "\\xc3\\xa9"


# --------------------------------------------------------------------------
# 6. Fuzzed headers: a documented code or success, never a hang or traceback
# --------------------------------------------------------------------------

DOCUMENTED = {0, 3, 4, 5, 6, 7, 9, 10, 12, 13}


def test_fuzzed_real_headers(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    """
    Random bytes flipped in the first 64 KiB of copies of the real kdump and
    makedumpfile dumps (and a crafted ELF): each run ends, in seconds, with a
    documented exit code.
    """
    rng = random.Random(f"issue-6-{sample_manifest['series']}")
    sources = [_elf(sample_manifest, "kdump"), _elf(sample_manifest, "makedumpfile")]
    crafted = tmp_path / "crafted.elf"
    crafted.write_bytes(elf_core())
    sources.append(str(crafted))
    seen: Counter[int] = Counter()
    for run in range(12):
        src = sources[run % len(sources)]
        dst = copy(src, tmp_path / f"fuzz{run}.vmcore")
        size = os.path.getsize(dst)
        with open(dst, "r+b") as f:
            for _ in range(rng.choice([1, 4, 32])):
                pos = rng.randrange(min(size, 1 << 16))
                f.seek(pos)
                f.write(bytes([rng.randrange(256)]))
        done = run_cli(
            "mine", str(dst), "--vmlinux", sample_manifest["vmlinux"], "--cache", CACHE,
            "--format", "json", "--quiet", timeout=600,
        )  # fmt: skip
        assert done.returncode in DOCUMENTED, (run, done.returncode, done.stderr)
        if done.returncode in (0, 10):  # 10: a report, partial for want of the page array
            assert json.loads(done.stdout)["partial"] == (done.returncode == 10)
        else:
            assert_one_line(done.stderr)
        seen[done.returncode] += 1
        os.unlink(dst)
    # The flips reached both kinds of header byte: some that refuse the dump
    # (on the samples: a changed build ID, 6; a VMCOREINFO symbol, 9), some
    # the readers do not need or tolerate (a report). A fuzz that only ever
    # succeeded, or only ever failed, would test one path.
    assert sum(seen.values()) == 12
    refused = sum(n for code, n in seen.items() if code not in (0, 10))
    assert seen[0] >= 1 and refused >= 1, seen


def test_table_quotes_templates_with_spaces_at_the_ends() -> None:
    fragments = [Fragment(b" 12", 3, 3), Fragment(b" 13", 2, 2), Fragment(b"usr", 1, 1)]
    report = Report(
        dump=DumpFacts("d", "r", "elf", None, None, "vmlinux"),
        cache=CacheFacts("c", ("c",), object_size=32, allocated=6, total=8, slabs=1),
        scan=ScanFacts(objects_scanned=6, slabs=1, seconds=0.0),
        fragments=fragments,
        clusters=cluster_fragments(fragments),
    )
    table = render(report, "table")
    assert '" <NUM>"' in table and " usr" in table and '"usr"' not in table
