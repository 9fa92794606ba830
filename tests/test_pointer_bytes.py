"""
Pointer bytes never count as text (dumpminer/extract/pointers.py, the scan in
dumpminer/extract/_runs.c): on bytes, and on every planted cache of the real
seed sample, held to an oracle that reads the objects with drgn's own slab
helpers and finds there the runs inside words holding kernel addresses.
Which pointer bytes are printable changes with each boot's KASLR layout, so
nothing here counts on any of them being so.
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
import numpy as np
import oracle
import pytest

import dumpminer
from dumpminer.clustering.tally import FragmentTally
from dumpminer.extract.fragments import (
    count_context,
    count_objects,
    printable_runs,
    scan_runs,
)
from dumpminer.extract.pointers import kernel_pointer_bytes, mask_kernel_pointers
from dumpminer.report.text import fragment_text

MIN_LENGTH = 3
PLANTED_CACHES = ["kmalloc-32", "kmalloc-64", "kmalloc-128"]
CACHES = [*PLANTED_CACHES, "kmalloc-96", "kmalloc-256"]


def _word(value: int) -> bytes:
    return value.to_bytes(8, "little")


def _pointer(low: bytes) -> bytes:
    """A direct-map pointer whose low bytes are *low* (then 0x00, up to 0xffff8d34........)."""
    return _word(0xFFFF_8D34_0000_0000 | int.from_bytes(low.ljust(4, b"\0"), "little"))


def _rows(*rows: bytes) -> np.ndarray[Any, np.dtype[np.uint8]]:
    width = max(map(len, rows))
    return np.frombuffer(b"".join(r.ljust(width, b"\0") for r in rows), np.uint8).reshape(
        len(rows), width
    )


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


def test_a_leaks_pointer_bytes_are_not_text() -> None:
    # kmalloc-256 of the issue: a record that starts with a direct-map
    # pointer whose low bytes read "\kz@", then the leak's own string.
    record = _pointer(b"\\kz@") + b"dev=eth0" + bytes(16)
    scan = scan_runs(_rows(*[record] * 5), MIN_LENGTH, blank_pointers=True)
    assert scan.texts == [b"dev=eth0"]
    assert scan.objects.tolist() == [5] and scan.offset.tolist() == [8] * 5
    assert scan.pointer_runs == 5
    # Without blanking, the pointer's bytes lead: as many objects as the leak.
    raw = scan_runs(_rows(*[record] * 5), MIN_LENGTH)
    assert raw.texts == [b"\\kz@4", b"dev=eth0"] and raw.objects.tolist() == [5, 5]
    assert raw.pointer_runs == 0


def test_a_string_that_runs_into_a_pointer_keeps_every_byte_of_its_own() -> None:
    # An ACPI name (4 bytes, no NUL) right before a pointer whose low byte is
    # printable: the run is cut where the pointer's word starts.
    named = bytes(4) + b"_DSM" + _pointer(b"@") + bytes(8)
    # A user-space address is not a kernel pointer: its bytes stay text.
    user = _word(0x0000_5555_5555_4554) + bytes(8)
    scan = scan_runs(_rows(named, user), MIN_LENGTH, blank_pointers=True)
    assert sorted(scan.texts) == [b"TEUUUU", b"_DSM"]
    assert scan.pointer_runs == 0
    assert scan_runs(_rows(named), MIN_LENGTH).texts == [b"_DSM@"]


def test_context_windows_leave_out_pointer_bytes_where_they_lie_in_memory() -> None:
    memory = bytes(8) + _pointer(b"\\kz@") + b"dev=eth0" + bytes(8)
    window = _rows(memory[5:25])  # starts 5 bytes past an aligned word
    assert count_context(window, MIN_LENGTH, True, misalign=5).texts == [b"dev=eth0"]
    assert count_context(window, MIN_LENGTH).texts == [b"\\kz@4", b"dev=eth0"]
    # Read as if aligned, the window's words are not memory's: nothing is a pointer.
    assert count_context(window, MIN_LENGTH, True).texts == [b"\\kz@4", b"dev=eth0"]


def _pointer_runs_by_hand(rows: np.ndarray[Any, np.dtype[np.uint8]], min_length: int) -> int:
    """Runs of at least *min_length* bytes lying inside a word that holds a kernel address."""
    n = 0
    for row in rows:
        data = row.tobytes()
        for at in range(0, len(data) - len(data) % 8, 8):
            word = data[at : at + 8]
            if int.from_bytes(word, "little") >= 0xFFFF_8000_0000_0000:
                # Bytes 6 and 7 are not printable: every run here is inside.
                n += sum(1 for _ in printable_runs(word, min_length))
    return n


@pytest.mark.parametrize("width", [5, 8, 13, 16, 31, 64, 96])
@pytest.mark.parametrize("min_length", [1, 2, 3, 4])
def test_blanked_scan_is_the_scan_of_masked_rows(width: int, min_length: int) -> None:
    rng = np.random.default_rng(width * 10 + min_length)
    rows = rng.integers(0x20, 0x7F, size=(500, width), dtype=np.uint8)
    rows[rng.random(rows.shape) < 0.1] = 0
    whole = width // 8 * 8
    if whole:
        words = np.ascontiguousarray(rows[:, :whole]).view("<u8")
        kernel = rng.integers(0, 2**47, size=words.shape, dtype=np.uint64)
        kernel |= np.uint64(0xFFFF_8000_0000_0000)
        chosen = rng.random(words.shape) < 0.3
        words[chosen] = kernel[chosen]
        rows[:, :whole] = words.view(np.uint8)
    want = scan_runs(mask_kernel_pointers(rows), min_length)
    got = scan_runs(rows, min_length, blank_pointers=True)
    assert got.texts == want.texts
    for column in ("row", "offset", "which", "occurrences", "objects", "offset_at"):
        assert (getattr(got, column) == getattr(want, column)).all(), column
    assert got.pointer_runs == _pointer_runs_by_hand(rows, min_length)
    assert scan_runs(rows, min_length).pointer_runs == 0


def test_counting_blanks_by_default_and_the_tally_sums_what_it_left_out() -> None:
    record = _pointer(b"\\kz@") + b"dev=eth0" + bytes(16)
    rows = _rows(*[record] * 4)
    addresses = np.arange(4, dtype=np.uint64) * np.uint64(32) + np.uint64(0xFFFF_8D34_0000_0000)
    counts = count_objects(rows, addresses, MIN_LENGTH)
    assert counts.texts == [b"dev=eth0"] and counts.pointer_runs == 4
    kept = count_objects(rows, addresses, MIN_LENGTH, blank_pointers=False)
    assert len(kept.texts) == 2 and kept.pointer_runs == 0
    one, two = FragmentTally(), FragmentTally()
    one.absorb(counts)
    two.absorb(counts)
    one.merge(two)
    assert one.pointer_runs == 8


# --- On the seed sample, held to drgn's helpers -------------------------------------------


@cache
def _oracle_prog(vmcore: str, vmlinux: str) -> drgn.Program:
    """The oracle's own drgn program: opened by tests/oracle.py, not by dumpminer."""
    return oracle.open_prog(vmcore, vmlinux)


@cache
def _oracle(vmcore: str, vmlinux: str, cache_name: str) -> tuple[Counter[str], set[str], int]:
    """
    Objects per text with pointer words blanked, the texts of runs lying
    inside a word holding a kernel address, and how many such runs.
    """
    prog = _oracle_prog(vmcore, vmlinux)
    size = oracle.object_size(prog, cache_name)
    texts: Counter[str] = Counter()
    inside: set[str] = set()
    runs = 0
    for address in oracle.allocated_objects(prog, cache_name):
        data = prog.read(address, size)
        words = oracle.kernel_words(data)
        texts.update(set(oracle.printable_texts(oracle.without_pointers(data), MIN_LENGTH)))
        for start, end in oracle.runs_at(data, MIN_LENGTH):
            if start // 8 * 8 in words and (end - 1) // 8 == start // 8:
                inside.add(data[start:end].decode("ascii"))
                runs += 1
    return texts, inside, runs


@cache
def _opened(vmcore: str, vmlinux: str) -> dumpminer.Dump:
    return dumpminer.open_dump(vmcore, vmlinux)


@cache
def _mined(vmcore: str, vmlinux: str, cache_name: str) -> dumpminer.Report:
    dump = _opened(vmcore, vmlinux)
    return dumpminer.mine(dump.prog, cache_name, dump=dump, workers=1)


def _kdump(manifest: dict[str, Any]) -> tuple[str, str]:
    entry = next(d for d in manifest["dumps"] if d["format"] == "kdump")
    return entry["path"], manifest["vmlinux"]


@pytest.mark.parametrize("cache_name", CACHES)
def test_no_row_is_pointer_bytes(sample_manifest: dict[str, Any], cache_name: str) -> None:
    vmcore, vmlinux = _kdump(sample_manifest)
    texts, inside, runs = _oracle(vmcore, vmlinux, cache_name)
    report = _mined(vmcore, vmlinux, cache_name)
    assert report.scan.pointers_masked
    # Every count is the oracle's with pointer words blanked ...
    assert {f.text.decode("ascii"): f.objects for f in report.fragments} == dict(texts)
    # ... so no member of any row is a run that only ever lay inside one ...
    members = {m.text.decode("ascii") for c in report.clusters for m in c.members}
    assert not members & (inside - set(texts))
    # ... and the report says how many runs it left out.
    assert report.scan.pointer_runs == runs
    table = dumpminer.render(report, "table")
    assert "POINTER BYTES KEPT" not in table


@pytest.mark.parametrize("fmt", ["elf", "makedumpfile"])
def test_no_row_is_pointer_bytes_in_every_dump_format(
    sample_manifest: dict[str, Any], fmt: str
) -> None:
    """The other dumps of the sample (read by drgn, not the kdump reader) give the same."""
    vmcore, vmlinux = _kdump(sample_manifest)
    texts, _, runs = _oracle(vmcore, vmlinux, "kmalloc-96")
    other = next(d["path"] for d in sample_manifest["dumps"] if d["format"] == fmt)
    report = _mined(other, vmlinux, "kmalloc-96")
    assert {f.text.decode("ascii"): f.objects for f in report.fragments} == dict(texts)
    assert report.scan.pointer_runs == runs


@pytest.mark.parametrize("cache_name", PLANTED_CACHES)
def test_planted_leaks_lead(sample_manifest: dict[str, Any], cache_name: str) -> None:
    vmcore, vmlinux = _kdump(sample_manifest)
    planted = sample_manifest["planted"][cache_name]
    report = _mined(vmcore, vmlinux, cache_name)
    strings, templates = set(planted["strings"]), set(planted.get("templates", {}))

    def is_planted(cluster: Any) -> bool:
        return fragment(cluster.template) in templates or any(
            fragment(m.text) in strings for m in cluster.members
        )

    leading = [c for c in report.clusters if is_planted(c)]
    assert leading and report.clusters[: len(leading)] == leading
    document = json.loads(dumpminer.render(report, "json"))
    first = [c["template"] for c in document["clusters"][: len(leading)]]
    assert first == [fragment(c.template) for c in leading]
    assert not any(c["binary"] for c in document["clusters"][: len(leading)])


def fragment(text: bytes) -> str:
    """A template or text as the JSON writes it."""
    return str(fragment_text(text))


def test_string_less_leak_leads_kmalloc_96(sample_manifest: dict[str, Any]) -> None:
    """The link records hold no text: their pointers' bytes make no row above them."""
    vmcore, vmlinux = _kdump(sample_manifest)
    report = _mined(vmcore, vmlinux, "kmalloc-96")
    links = sample_manifest["string_less"]["kmalloc-96"]["objects"]
    table = dumpminer.render(report, "table")
    assert f"LEADING: string-less shape group S1, {links} objects" in table
    assert all(c.objects < links for c in report.clusters)


def test_cli_keep_pointers_counts_them_and_says_so(
    sample_manifest: dict[str, Any], tmp_path: Any
) -> None:
    vmcore, vmlinux = _kdump(sample_manifest)
    base = [sys.executable, "-m", "dumpminer", "mine", vmcore, "--vmlinux", vmlinux,
            "--cache", "kmalloc-96", "--quiet", "--no-attribution"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    def scan(*extra: str) -> dict[str, Any]:
        out = tmp_path / "report.json"
        done = subprocess.run([*base, "--format", "json", *extra, "-o", str(out)], env=env,
                              capture_output=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return dict(json.loads(out.read_text()))

    texts, inside, runs = _oracle(vmcore, vmlinux, "kmalloc-96")
    default, asked, keep = scan(), scan("--mask-pointers"), scan("--keep-pointers")
    for document in (default, asked):
        assert document["scan"]["pointers_masked"]
        assert document["scan"]["pointer_runs"] == runs
        assert {f["text"] for f in document["fragments"]} == set(texts)
    assert not keep["scan"]["pointers_masked"] and keep["scan"]["pointer_runs"] == 0
    assert {f["text"] for f in keep["fragments"]} >= inside
    table = subprocess.run([*base, "--keep-pointers"], env=env, capture_output=True, text=True)
    assert table.returncode == 0 and "POINTER BYTES KEPT" in table.stdout
    page = tmp_path / "report.html"
    done = subprocess.run([*base, "--keep-pointers", "--format", "html", "-o", str(page)], env=env)
    assert done.returncode == 0 and "POINTER BYTES KEPT" in page.read_text()
    both = subprocess.run([*base, "--keep-pointers", "--mask-pointers"], env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert both.returncode == 2
    assert "not allowed with argument" in both.stderr
    assert "Traceback" not in both.stderr
