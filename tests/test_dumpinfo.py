"""Tests for dumpminer.dump.info: crafted ELF/kdump/flattened headers, fuzzing, real dumps."""

from __future__ import annotations

import math
import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import unprivileged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dumpminer.dump.info import (
    DumpInfo,
    check_architecture,
    parse_vmcoreinfo,
    read_dump_info,
    read_vmcoreinfo_text,
)
from dumpminer.errors import ArchitectureError, InputFileError, NotADumpError

BUILD_ID = "0123456789ABCDEF0123456789abcdef01234567"
VMCOREINFO = (
    "OSRELEASE=6.1.0-18-amd64\n"
    f"BUILD-ID={BUILD_ID}\n"
    "PAGESIZE=4096\n"
    "SYMBOL(init_uts_ns)=ffffffff82a13220\n"
    "KERNELOFFSET=1a000000\n"
    "NUMBER(phys_base)=-1509949440\n"
    "CRASHTIME=1700000000\n"
).encode()


# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """One ELF note, 4-byte padded."""
    name0 = name + b"\0"

    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    return struct.pack("<III", len(name0), len(desc), ntype) + pad(name0) + pad(desc)


def elf_core(
    vmcoreinfo: bytes | None = VMCOREINFO,
    loads: list[tuple[int, int, int]] | None = None,
    machine: int = 62,
    e_type: int = 4,
) -> bytes:
    """A minimal ELF64 core: one PT_NOTE (PRSTATUS + VMCOREINFO) and PT_LOADs
    given as (paddr, memsz, filesz); segment data is zero-filled."""
    if loads is None:
        loads = [(0x100000, 0x3000, 0x3000)]
    notes = note(b"CORE", 1, b"\x11" * 336)
    if vmcoreinfo is not None:
        notes += note(b"VMCOREINFO", 0, vmcoreinfo)
    phnum = 1 + len(loads)
    data_at = 64 + 56 * phnum
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, data_at, 0, 0, len(notes), len(notes), 4)
    body = notes
    for paddr, memsz, filesz in loads:
        off = data_at + len(body)
        vaddr = 0xFFFF888000000000 + paddr
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, vaddr, paddr, filesz, memsz, 4096)
        body += b"\0" * filesz
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack(
        "<HHIQQQIHHHHHH", e_type, machine, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0
    )
    assert len(ehdr) == 64
    return ehdr + phdrs + body


def kdump(
    *,
    vmcoreinfo: bytes | None = VMCOREINFO,
    header_version: int = 6,
    dump_level: int = 31,
    block_size: int = 4096,
    max_mapnr: int = 1000,
    bitmap1: bytes | None = None,
    bitmap2: bytes | None = None,
    timestamp: int = 1_600_000_000,
    release: str = "6.1.0-uts",
    machine: str = "x86_64",
    vmcoreinfo_in_note_only: bool = False,
) -> bytes:
    """A kdump-compressed file up to the end of its bitmaps (no page data)."""
    notes = note(b"CORE", 1, b"\x22" * 336)
    if vmcoreinfo is not None:
        notes += note(b"VMCOREINFO", 0, vmcoreinfo)
    sub_size = 104
    offset_note = block_size + sub_size
    sub_hdr_size = math.ceil((sub_size + len(notes)) / block_size)
    half = math.ceil(max_mapnr / 8 / block_size) * block_size
    if bitmap1 is None:
        bitmap1 = b"\xff" * (max_mapnr // 8) + bytes([(1 << (max_mapnr % 8)) - 1])
    if bitmap2 is None:
        bitmap2 = bitmap1
    bitmap_blocks = 2 * half // block_size

    uts = b""
    for value in ("Linux", "guest", release, "#1 SMP", machine, "(none)"):
        uts += value.encode().ljust(65, b"\0")
    header = struct.pack(
        "<8si390s6xqqIiiIIIIIIi",
        b"KDUMP   ",
        header_version,
        uts,
        timestamp,
        0,
        1,
        block_size,
        sub_hdr_size,
        bitmap_blocks,
        min(max_mapnr, 0xFFFFFFFF),
        max_mapnr,
        0,
        0,
        0,
        1,
    )
    assert len(header) == 464
    vi_off = vi_size = 0
    if vmcoreinfo is not None and not vmcoreinfo_in_note_only:
        vi_off = offset_note + len(notes) - len(note(b"VMCOREINFO", 0, vmcoreinfo)) + 12 + 12
        vi_size = len(vmcoreinfo)
    sub = struct.pack(
        "<QiiQQqQqQqQQQQ",
        0x1000000,
        dump_level,
        0,
        0,
        max_mapnr,
        vi_off,
        vi_size,
        offset_note,
        len(notes),
        0,
        0,
        0,
        max_mapnr,
        max_mapnr,
    )
    out = bytearray(header.ljust(block_size, b"\0"))
    out += (sub + notes).ljust(sub_hdr_size * block_size, b"\0")
    out += bitmap1.ljust(half, b"\0") + bitmap2.ljust(half, b"\0")
    if vi_off and vmcoreinfo is not None:
        assert bytes(out[vi_off : vi_off + vi_size]) == vmcoreinfo
    return bytes(out)


def flatten(plain: bytes, chunk: int = 1000, shuffle: bool = True, seed: int = 1) -> bytes:
    """The makedumpfile -F form of ``plain``: records of ``chunk`` bytes, in
    random order (readers must not rely on order), then the end marker."""
    header = b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)
    records = [(off, plain[off : off + chunk]) for off in range(0, len(plain), chunk)]
    if shuffle:
        first, rest = records[:1], records[1:]
        random.Random(seed).shuffle(rest)
        records = first + rest
    out = bytearray(header.ljust(4096, b"\0"))
    for off, data in records:
        out += struct.pack(">qq", off, len(data)) + data
    out += struct.pack(">qq", -1, -1)
    return bytes(out)


def write(tmp_path: Path, data: bytes, name: str = "vmcore") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# --------------------------------------------------------------------------
# ELF
# --------------------------------------------------------------------------


def test_elf_fields(tmp_path: Path) -> None:
    info = read_dump_info(write(tmp_path, elf_core()))
    assert info.format == "elf"
    assert info.arch == "x86_64"
    assert info.osrelease == "6.1.0-18-amd64"
    assert info.build_id == BUILD_ID.lower()
    assert info.crash_time == 1_700_000_000
    assert info.page_size == 4096
    assert info.kerneloffset == 0x1A000000
    assert info.phys_mem_bytes == 0x3000
    assert info.filtered is False
    assert info.dump_level is None
    assert info.vmcoreinfo["SYMBOL(init_uts_ns)"] == "ffffffff82a13220"
    assert info.vmcoreinfo["NUMBER(phys_base)"] == "-1509949440"
    check_architecture(info)


def test_elf_phys_mem_is_union_of_physical_ranges(tmp_path: Path) -> None:
    # The kernel-text PT_LOAD of /proc/vmcore maps memory a direct-map PT_LOAD
    # already covers: it must not be counted twice.
    loads = [(0x1000, 0x9F000, 0x9F000), (0x100000, 0x100000, 0x100000), (0x180000, 0x8000, 0x8000)]
    info = read_dump_info(write(tmp_path, elf_core(loads=loads)))
    assert info.phys_mem_bytes == 0x9F000 + 0x100000


def test_elf_without_vmcoreinfo(tmp_path: Path) -> None:
    info = read_dump_info(write(tmp_path, elf_core(vmcoreinfo=None)))
    assert (info.osrelease, info.build_id, info.crash_time, info.page_size) == (
        None,
        None,
        None,
        None,
    )
    assert info.vmcoreinfo == {}
    assert read_vmcoreinfo_text(info.path) is None


def test_elf_filtered_when_segment_shorter_in_file(tmp_path: Path) -> None:
    info = read_dump_info(write(tmp_path, elf_core(loads=[(0, 0x4000, 0x1000)])))
    assert info.filtered is True


def test_elf_not_a_core(tmp_path: Path) -> None:
    with pytest.raises(NotADumpError, match="not a core"):
        read_dump_info(write(tmp_path, elf_core(e_type=2)))


def test_elf_other_architecture(tmp_path: Path) -> None:
    info = read_dump_info(write(tmp_path, elf_core(machine=183)))
    assert info.arch == "aarch64"
    with pytest.raises(ArchitectureError, match=r"aarch64.*x86_64"):
        check_architecture(info)


def test_read_vmcoreinfo_text(tmp_path: Path) -> None:
    p = write(tmp_path, elf_core())
    assert read_vmcoreinfo_text(p) == VMCOREINFO.decode()


def test_parse_vmcoreinfo_edge_cases() -> None:
    got = parse_vmcoreinfo(b"A=1\nnoequals\nB=x=y\n=empty\nA=2\n\0\0garbage")
    assert got == {"A": "2", "B": "x=y"}


# --------------------------------------------------------------------------
# kdump-compressed
# --------------------------------------------------------------------------


def test_kdump_fields(tmp_path: Path) -> None:
    b1 = b"\xff" * 125
    b2 = b"\x0f" * 125  # half the pages filtered out
    info = read_dump_info(write(tmp_path, kdump(bitmap1=b1, bitmap2=b2)))
    assert info.format == "kdump"
    assert info.arch == "x86_64"
    assert info.osrelease == "6.1.0-18-amd64"  # VMCOREINFO wins over utsname
    assert info.build_id == BUILD_ID.lower()
    assert info.crash_time == 1_700_000_000  # CRASHTIME wins over the header
    assert info.page_size == 4096
    assert info.kerneloffset == 0x1A000000
    assert info.phys_mem_bytes == 1000 * 4096
    assert info.filtered is True
    assert info.dump_level == 31


def test_kdump_like_qemu(tmp_path: Path) -> None:
    # QEMU: dump_level 1 but identical bitmaps (nothing left out), timestamp 0,
    # empty utsname.release, no VMCOREINFO without -device vmcoreinfo.
    data = kdump(vmcoreinfo=None, dump_level=1, timestamp=0, release="")
    info = read_dump_info(write(tmp_path, data))
    assert info.dump_level == 1
    assert info.filtered is False
    assert info.crash_time is None
    assert info.osrelease is None
    assert info.build_id is None
    assert info.page_size == 4096
    assert info.vmcoreinfo == {}


def test_kdump_holes_are_not_memory(tmp_path: Path) -> None:
    # Bitmap 1 marks the pages that exist; holes (e.g. the PCI hole) do not count.
    b1 = b"\xff" * 10 + b"\0" * 100 + b"\xff" * 15
    info = read_dump_info(write(tmp_path, kdump(bitmap1=b1, bitmap2=b1)))
    assert info.phys_mem_bytes == 25 * 8 * 4096
    assert info.filtered is False


def test_kdump_vmcoreinfo_found_in_notes(tmp_path: Path) -> None:
    info = read_dump_info(write(tmp_path, kdump(vmcoreinfo_in_note_only=True)))
    assert info.osrelease == "6.1.0-18-amd64"


def test_kdump_old_header_version_uses_utsname(tmp_path: Path) -> None:
    data = kdump(header_version=1, vmcoreinfo=None, dump_level=0)
    info = read_dump_info(write(tmp_path, data))
    assert info.osrelease == "6.1.0-uts"
    assert info.crash_time == 1_600_000_000
    assert info.dump_level == 0
    assert info.filtered is False


def test_kdump_small_block_size(tmp_path: Path) -> None:
    info = read_dump_info(write(tmp_path, kdump(block_size=512)))
    assert info.page_size == 4096  # VMCOREINFO PAGESIZE
    info = read_dump_info(write(tmp_path, kdump(block_size=512, vmcoreinfo=None)))
    assert info.page_size == 512


def test_kdump_other_architecture(tmp_path: Path) -> None:
    info = read_dump_info(write(tmp_path, kdump(machine="s390x")))
    with pytest.raises(ArchitectureError, match="s390x"):
        check_architecture(info)


def test_flattened_matches_plain(tmp_path: Path) -> None:
    b1 = b"\xff" * 125
    b2 = b"\xf0" * 125
    plain = kdump(bitmap1=b1, bitmap2=b2)
    a = read_dump_info(write(tmp_path, plain, "plain"))
    b = read_dump_info(write(tmp_path, flatten(plain), "flat"))
    assert b.format == "kdump-flattened"
    # This header-only file has no page data: the plain reader says it is cut
    # short; a flattened stream's end is not checked (docs/info.md).
    assert a.cut_short is not None and b.cut_short is None
    assert {**a.__dict__, "format": None, "path": None, "cut_short": None} == {
        **b.__dict__,
        "format": None,
        "path": None,
    }


def test_flattened_like_qemu(tmp_path: Path) -> None:
    data = flatten(kdump(dump_level=1), chunk=4096, shuffle=False)
    info = read_dump_info(write(tmp_path, data))
    assert (info.format, info.dump_level, info.filtered) == ("kdump-flattened", 1, False)


def test_flattened_elf_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotADumpError, match="makedumpfile -R"):
        read_dump_info(write(tmp_path, flatten(elf_core())))


# --------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"cannot read VMCORE .*No such file or directory"):
        read_dump_info(tmp_path / "nope")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="cannot read VMCORE"):
        read_dump_info(tmp_path)


_READ_DUMP_INFO = """
import sys
from dumpminer.dump.info import read_dump_info
from dumpminer.errors import InputFileError
try:
    read_dump_info(sys.argv[1])
except InputFileError as e:
    print("InputFileError:", e)
"""


def test_unreadable(tmp_path: Path) -> None:
    """A dump the user may not read; as root, root without capabilities tries."""
    p = write(tmp_path, elf_core())
    p.chmod(0)
    done = subprocess.run(
        [*unprivileged(), sys.executable, "-c", _READ_DUMP_INFO, str(p)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("InputFileError: ") and "Permission denied" in done.stdout


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (b"", "empty"),
        (b"hello world, not a dump", "unknown signature"),
        (b"\x1f\x8b\x08\x00" + b"\0" * 100, "gzip"),
        (b"\x28\xb5\x2f\xfd" + b"\0" * 100, "zstd"),
        (b"DISKDUMP" + b"\0" * 600, "DISKDUMP"),
        (b"makedumpfile\0\0\0\0" + struct.pack(">qq", 2, 1) + b"\0" * 4064, "type"),
    ],
)
def test_not_a_dump(tmp_path: Path, data: bytes, pattern: str) -> None:
    p = write(tmp_path, data)
    with pytest.raises(NotADumpError, match=pattern) as exc:
        read_dump_info(p)
    assert "\n" not in str(exc.value)
    assert str(p) in str(exc.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda: elf_core(),
        lambda: kdump(block_size=512, max_mapnr=2000),
    ],
    ids=["elf", "kdump"],
)
def test_truncated_at_every_length(tmp_path: Path, make: Any) -> None:
    full = make()
    p = tmp_path / "vmcore"
    read_dump_info(write(tmp_path, full))
    for n in range(len(full)):
        p.write_bytes(full[:n])
        with pytest.raises(NotADumpError):
            read_dump_info(p)


def test_truncated_flattened(tmp_path: Path) -> None:
    plain = kdump(block_size=512, max_mapnr=2000)
    full = flatten(plain, chunk=256, shuffle=False)
    p = tmp_path / "vmcore"
    # A cut stream is refused until the records holding the headers and
    # VMCOREINFO are in; after that it is still identified (the pages, not the
    # headers, are what is missing) and must report the same facts.
    vi_end = plain.index(VMCOREINFO) + len(VMCOREINFO)
    records_needed = math.ceil(vi_end / 256)
    headers_end = 4096 + records_needed * 16 + vi_end
    for n in range(0, len(full), 7):
        p.write_bytes(full[:n])
        try:
            info = read_dump_info(p)
        except NotADumpError:
            assert n < len(full) - 16  # only the complete stream must pass
            continue
        assert n >= headers_end
        assert info.osrelease == "6.1.0-18-amd64"
        assert info.build_id == BUILD_ID.lower()


def _set(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        # kdump: block_size, sub_hdr_size, bitmap_blocks, max_mapnr, vmcoreinfo size
        (lambda: _set(kdump(), 428, "<i", 3), "block_size"),
        (lambda: _set(kdump(), 428, "<i", 1 << 30), "block_size"),
        (lambda: _set(kdump(), 432, "<i", 0x7FFFFFFF), "truncated"),
        (lambda: _set(kdump(), 436, "<I", 0xFFFFFFFE), "truncated"),
        (lambda: _set(kdump(), 4096 + 96, "<Q", 1 << 60), "cannot cover"),
        (lambda: _set(kdump(), 4096 + 40, "<Q", 1 << 40), "VMCOREINFO"),
        (lambda: _set(kdump(), 4096 + 32, "<q", 1 << 50), "VMCOREINFO"),
        (lambda: _set(kdump(), 8, "<i", 1000), "header_version"),
        # ELF: e_phnum, PT_NOTE size, PT_LOAD size, e_phentsize
        (lambda: _set(elf_core(), 56, "<H", 0xFFFE), "program headers"),
        (lambda: _set(elf_core(), 64 + 32, "<Q", 1 << 62), "past the end"),
        (lambda: _set(elf_core(), 120 + 32, "<Q", 1 << 40), "past the end"),
        (lambda: _set(elf_core(), 54, "<H", 8), "e_phentsize"),
        # flattened: record size
        (
            lambda: _set(flatten(kdump(), shuffle=False), 4096 + 8, ">q", 1 << 62),
            "corrupt flattened record",
        ),
    ],
)
def test_absurd_sizes_refused(tmp_path: Path, mutate: Any, pattern: str) -> None:
    p = write(tmp_path, mutate())
    with pytest.raises(NotADumpError, match=pattern) as exc:
        read_dump_info(p)
    assert "\n" not in str(exc.value)


MAGICS = [b"\x7fELF", b"KDUMP   ", b"makedumpfile\0\0\0\0" + struct.pack(">qq", 1, 1)]


def _check_refusal(error: NotADumpError, path: Path) -> None:
    """A refused file: one non-empty line naming the file, and the exit code of a non-dump."""
    text = str(error)
    assert text and "\n" not in text and str(path) in text, text
    assert error.exit_code == NotADumpError.exit_code


def _check_facts(info: DumpInfo, path: Path) -> None:
    """Facts read from garbage are still facts of the kinds the report prints."""
    assert info.path == str(path)
    assert info.format in ("elf", "kdump", "kdump-flattened")
    assert info.page_size is None or info.page_size > 0
    assert info.dump_level is None or info.dump_level >= 0
    assert info.phys_mem_bytes is None or info.phys_mem_bytes >= 0
    assert info.build_id is None or all(c in "0123456789abcdef" for c in info.build_id)
    for text in (info.arch, info.osrelease or "", *info.vmcoreinfo, *info.vmcoreinfo.values()):
        assert isinstance(text, str)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(magic=st.sampled_from(MAGICS), tail=st.binary(max_size=6000))
def test_fuzz_random_bytes_after_magic(tmp_path: Path, magic: bytes, tail: bytes) -> None:
    p = write(tmp_path, magic + tail)
    try:
        info = read_dump_info(p)
    except NotADumpError as e:
        _check_refusal(e, p)
    else:
        _check_facts(info, p)


VALID = {
    "elf": elf_core(),
    "kdump": kdump(block_size=512, max_mapnr=2000),
    "flat": flatten(kdump(block_size=512, max_mapnr=2000), chunk=300, shuffle=False),
}


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    which=st.sampled_from(sorted(VALID)),
    edits=st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_fuzz_corrupted_headers(tmp_path: Path, which: str, edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    p = write(tmp_path, bytes(data))
    try:
        info = read_dump_info(p)
    except NotADumpError as e:
        _check_refusal(e, p)
    else:
        _check_facts(info, p)


# --------------------------------------------------------------------------
# Real dumps (tests/conftest.py builds them with sample_dumps/build.py)
# --------------------------------------------------------------------------


def test_real_dumps(sample_manifest: dict[str, Any]) -> None:
    manifest = sample_manifest
    from dumpminer.dump.debuginfo import vmlinux_build_id

    assert manifest["build_id"] == vmlinux_build_id(manifest["vmlinux"])
    guest = manifest["guest_memory_mib"] << 20
    assert manifest["dumps"]
    for dump in manifest["dumps"]:
        info = read_dump_info(dump["path"])
        check_architecture(info)
        assert info.format == {"elf": "elf", "flattened": "kdump-flattened"}.get(
            dump["format"], "kdump"
        )
        assert info.osrelease == manifest["kernel_release"]
        assert info.build_id == manifest["build_id"]
        assert info.page_size == 4096
        assert info.phys_mem_bytes is not None
        # Guest RAM, less firmware-reserved holes, plus small device RAM (VGA).
        assert abs(info.phys_mem_bytes - guest) < max(guest // 10, 64 << 20), dump
        assert info.filtered == dump["filtered"], dump
        if dump["filtered"]:
            # makedumpfile records the level it applied: a subset of the one
            # asked for (1.7.2 drops bit 8, user pages, on 6.12: 31 -> 23).
            assert info.dump_level, dump
            assert info.dump_level & ~dump["dump_level"] == 0, (info.dump_level, dump)
        elif dump["format"] in ("kdump", "flattened"):
            # QEMU always writes DUMP_LEVEL 1 yet leaves no page out (both
            # bitmaps equal), which is why filtered comes from the bitmaps.
            assert info.dump_level == 1
        else:
            assert info.dump_level is None


def test_real_kdump_flattened(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    manifest = sample_manifest
    # QEMU < 8.2 writes -z dumps flattened; the sample keeps only the
    # reassembled file, so flatten it again (in order, as QEMU does).
    src = next(d for d in manifest["dumps"] if d["format"] == "kdump")["path"]
    flat = tmp_path / "kdump.flat"
    with open(src, "rb") as fin, open(flat, "wb") as fout:
        fout.write((b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)).ljust(4096, b"\0"))
        off = 0
        while chunk := fin.read(4096):  # QEMU writes page-sized records
            fout.write(struct.pack(">qq", off, len(chunk)) + chunk)
            off += len(chunk)
        fout.write(struct.pack(">qq", -1, -1))
    a = read_dump_info(src)
    b = read_dump_info(flat)
    assert b.format == "kdump-flattened"
    assert (a.osrelease, a.build_id, a.phys_mem_bytes, a.filtered, a.dump_level) == (
        b.osrelease,
        b.build_id,
        b.phys_mem_bytes,
        b.filtered,
        b.dump_level,
    )


@pytest.mark.skipif(shutil.which("makedumpfile") is None, reason="needs makedumpfile")
def test_real_makedumpfile_elf_and_flattened(
    sample_manifest: dict[str, Any], tmp_path: Path
) -> None:
    # makedumpfile -E marks left-out pages by PT_LOADs shorter in the file
    # than in memory; -F writes the flattened stream itself.
    from sample_dumps.build import fix_qemu_elf_header

    src = next(d for d in sample_manifest["dumps"] if d["format"] == "elf")["path"]
    fixed = tmp_path / "fixed.elf"
    shutil.copyfile(src, fixed)
    fix_qemu_elf_header(fixed)
    elf_out = tmp_path / "filtered.elf"
    subprocess.run(
        ["makedumpfile", "-E", "-d", "31", str(fixed), str(elf_out)],
        check=True,
        capture_output=True,
    )
    flat_out = tmp_path / "filtered.flat"
    with flat_out.open("wb") as out:
        subprocess.run(
            ["makedumpfile", "-F", "-d", "31", str(fixed)],
            check=True,
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
    plain = read_dump_info(fixed)
    elf = read_dump_info(elf_out)
    flat = read_dump_info(flat_out)
    assert (plain.filtered, elf.filtered, flat.filtered) == (False, True, True)
    assert (elf.format, flat.format) == ("elf", "kdump-flattened")
    assert flat.dump_level and flat.dump_level & ~31 == 0
    for info in (elf, flat):
        assert info.osrelease == sample_manifest["kernel_release"]
        assert info.build_id == sample_manifest["build_id"]
