"""
dumpminer's readers of dump files (dumpminer/dump/kdumpread.py,
dumpminer/dump/_kdump.c)
held to drgn's reads, page for page, on every dump of the seed sample of every
series: kdump (plain and flattened; zlib, lzo, snappy and zstd pages) and ELF;
and what they do with dumps they must not read: other formats, pages whose
library is missing, descriptors or data outside the file. There they give
way to drgn.
"""

from __future__ import annotations

import shutil
import struct
from functools import cache
from pathlib import Path
from typing import Any

import drgn
import numpy as np
import oracle
import pytest

from dumpminer.dump import _kdump
from dumpminer.dump.kdumpread import (
    ElfReader,
    KdumpReader,
    MemoryReader,
    PhysicalReader,
    bitmap_pages,
    memory_reader,
    open_physical_reader,
)
from dumpminer.slub.walk import _page_ranges

#: Pages read at once in the page-for-page comparison.
RUN = 64
#: Formats whose pages are zlib (read with libdeflate, and with zlib).
ZLIB_FORMATS = ["kdump", "flattened", "makedumpfile"]
#: The other formats: pages of lzo, snappy, zstd; and ELF, not compressed.
OTHER_FORMATS = ["lzo", "snappy", "zstd", "elf"]
#: Page flag of each compression, as _kdump.refuse() takes it.
FLAGS = {"lzo": 0x2, "snappy": 0x4, "zstd": 0x20}


@cache
def _oracle_prog(vmcore: str, vmlinux: str) -> drgn.Program:
    return oracle.open_prog(vmcore, vmlinux)


@pytest.fixture(params=["libdeflate", "zlib"])
def inflater(request: pytest.FixtureRequest) -> Any:
    """Each library that can inflate pages, in turn (libdeflate only where installed)."""
    _kdump.use_zlib(request.param == "zlib")
    try:
        if _kdump.inflater() != request.param:
            pytest.skip(f"{request.param} is not installed (libdeflate.so.0)")
        yield request.param
    finally:
        _kdump.use_zlib(False)


def _dump(manifest: dict[str, Any], fmt: str) -> str:
    return str(next(d for d in manifest["dumps"] if d["format"] == fmt)["path"])


def _pages(reader: PhysicalReader) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """PFNs of every page the dump holds, ascending."""
    if isinstance(reader, KdumpReader):
        return bitmap_pages(reader)
    assert isinstance(reader, ElfReader)
    page = reader.block_size
    runs = [
        np.arange(-(-int(start) // page), (int(start) + int(size)) // page, dtype=np.uint64)
        for start, size, _ in reader.segments
    ]
    return np.concatenate(runs)


def _reader_and_oracle(manifest: dict[str, Any], fmt: str) -> tuple[PhysicalReader, drgn.Program]:
    """The fast reader of the sample's *fmt* dump, and drgn's program on the same dump."""
    path = _dump(manifest, fmt)
    reader = open_physical_reader(path)
    assert reader is not None, path
    assert isinstance(reader, ElfReader if fmt == "elf" else KdumpReader)
    return reader, _oracle_prog(path, manifest["vmlinux"])


def _drgn_read(prog: drgn.Program, phys: int, size: int) -> bytes | None:
    try:
        data: bytes = prog.read(phys, size, True)
        return data
    except drgn.FaultError:
        return None


def _every_page_as_drgn_reads_it(manifest: dict[str, Any], fmt: str) -> None:
    reader, prog = _reader_and_oracle(manifest, fmt)
    pfns = _pages(reader)
    assert len(pfns) > 10_000
    page = reader.block_size
    # Runs of consecutive PFNs, at most RUN pages each: the reads the walk makes.
    breaks = np.flatnonzero(np.diff(pfns) != 1) + 1
    read = 0
    for run in np.split(pfns, breaks):
        for start in range(0, len(run), RUN):
            chunk = run[start : start + RUN]
            phys, size = int(chunk[0]) * page, len(chunk) * page
            ours = reader.read(phys, size)
            assert isinstance(ours, bytes), f"pfn {ours} refused"
            assert ours == _drgn_read(prog, phys, size), f"pages at {phys:#x}"
            read += len(chunk)
    assert read == len(pfns)


def _pieces_of_pages_and_into_a_buffer(manifest: dict[str, Any], fmt: str) -> None:
    reader, prog = _reader_and_oracle(manifest, fmt)
    pfns = _pages(reader)
    rng = np.random.default_rng(15)
    page = reader.block_size
    for pfn in rng.choice(pfns[:-3], 300).tolist():
        offset = int(rng.integers(0, page))
        size = int(rng.integers(1, 3 * page))
        phys = pfn * page + offset
        expected = _drgn_read(prog, phys, size)
        ours = reader.read(phys, size)
        if expected is None or isinstance(ours, int):
            # Only where drgn cannot read all of it either, or reads zeros
            # for what the dump does not hold (then drgn is asked).
            assert isinstance(ours, int)
            assert expected is None or pfn + 3 >= ours >= pfn
            continue
        assert ours == expected
        out = bytearray(size + 7)
        assert reader.read(phys, size, memoryview(out)[3 : 3 + size]) is None
        assert out[3 : 3 + size] == expected and out[:3] == bytes(3)


@pytest.mark.parametrize("fmt", ZLIB_FORMATS)
def test_every_page_as_drgn_reads_it(
    sample_manifest: dict[str, Any], fmt: str, inflater: str
) -> None:
    _every_page_as_drgn_reads_it(sample_manifest, fmt)


@pytest.mark.parametrize("fmt", OTHER_FORMATS)
def test_every_page_of_other_formats_as_drgn_reads_it(
    sample_manifest: dict[str, Any], fmt: str
) -> None:
    if fmt in FLAGS:
        assert fmt in _kdump.decompressors(), f"lib{fmt} is not installed"
    _every_page_as_drgn_reads_it(sample_manifest, fmt)


@pytest.mark.parametrize("fmt", ZLIB_FORMATS)
def test_pieces_of_pages_and_into_a_buffer(
    sample_manifest: dict[str, Any], fmt: str, inflater: str
) -> None:
    _pieces_of_pages_and_into_a_buffer(sample_manifest, fmt)


@pytest.mark.parametrize("fmt", OTHER_FORMATS)
def test_pieces_of_pages_of_other_formats(sample_manifest: dict[str, Any], fmt: str) -> None:
    _pieces_of_pages_and_into_a_buffer(sample_manifest, fmt)


@pytest.mark.parametrize("fmt", sorted(FLAGS))
def test_pages_whose_library_is_missing_are_left_to_drgn(
    sample_manifest: dict[str, Any], fmt: str
) -> None:
    """Without liblzo2, libsnappy or libzstd, their pages are drgn's to read: same bytes."""
    kdump, prog = _reader_and_oracle(sample_manifest, fmt)
    pfn = int(_pages(kdump)[500])
    page = kdump.block_size
    reader = MemoryReader(prog, kdump)
    address = reader.page_offset + pfn * page
    fast = reader.read(address, page)
    _kdump.refuse(FLAGS[fmt])
    try:
        assert fmt not in _kdump.decompressors()
        assert kdump.read(pfn * page, page) == pfn
        assert reader.read(address, page) == fast == _drgn_read(prog, pfn * page, page)
    finally:
        _kdump.refuse(0)


def test_pages_not_in_the_dump_are_left_to_drgn(sample_manifest: dict[str, Any]) -> None:
    path = _dump(sample_manifest, "makedumpfile")
    reader = KdumpReader.open(path)
    assert reader is not None
    pfns = set(bitmap_pages(reader).tolist())
    missing = next(p for p in range(1, reader.max_pfn) if p not in pfns and p - 1 in pfns)
    page = reader.block_size
    # A read that starts in the dump and runs into a filtered page names that page.
    assert reader.read((missing - 1) * page, 2 * page) == missing
    assert reader.read(reader.max_pfn * page, page) == reader.max_pfn


def test_other_machines_are_read_by_drgn(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    """An ELF core of another machine (or byte order) is not read by dumpminer."""
    src = _dump(sample_manifest, "elf")
    with open(src, "rb") as f:
        head = bytearray(f.read(1 << 16))
    for offset, value in [(18, struct.pack("<H", 183)), (5, b"\x02"), (16, struct.pack("<H", 2))]:
        copy = tmp_path / "copy.vmcore"
        patched = bytearray(head)
        patched[offset : offset + len(value)] = value
        copy.write_bytes(bytes(patched))
        assert ElfReader.open(str(copy)) is None, (offset, value)
        assert open_physical_reader(str(copy)) is None


@pytest.mark.parametrize("fmt", [*ZLIB_FORMATS, *OTHER_FORMATS])
def test_every_format_is_read_on_threads(sample_manifest: dict[str, Any], fmt: str) -> None:
    path = _dump(sample_manifest, fmt)
    reader = memory_reader(_oracle_prog(path, sample_manifest["vmlinux"]))
    assert reader.physical is not None and reader.parallel


@pytest.mark.parametrize("fmt", ["kdump", "elf", "flattened"])
def test_page_array_through_the_page_tables(sample_manifest: dict[str, Any], fmt: str) -> None:
    kdump, prog = _reader_and_oracle(sample_manifest, fmt)
    reader = MemoryReader(prog, kdump)
    size = prog.type("struct page").size
    chunks = 0
    for start, end, page0 in _page_ranges(prog):
        for lo in range(start, end, 1 << 16):
            hi = min(end, lo + (1 << 16))
            address, length = page0 + lo * size, (hi - lo) * size
            ours = reader._read_physical(kdump, address, length)
            assert ours is not None, f"page array at {address:#x} left to drgn"
            assert ours == prog.read(address, length)
            chunks += 1
    assert chunks >= 2


def _flat_records(path: str) -> list[tuple[int, int, int]]:
    """(position of the record header, offset, size) of each record of a flattened file."""
    records = []
    with open(path, "rb") as f:
        pos = 4096
        while True:
            f.seek(pos)
            offset, size = struct.unpack(">qq", f.read(16))
            if offset == -1:
                return records
            records.append((pos, offset, size))
            pos += 16 + size


def test_flattened_records_it_does_not_read(
    sample_manifest: dict[str, Any], tmp_path: Path
) -> None:
    """Records that overlap, run past the file, or a stream cut short: drgn reads those."""
    src = _dump(sample_manifest, "flattened")
    records = _flat_records(src)
    assert len(records) > 100
    pos, _, size = records[len(records) // 2]
    later_pos, later_offset, _ = records[len(records) // 2 + 1]
    for what, at, value in [
        ("overlaps the next record", pos, struct.pack(">q", later_offset - 1)),
        ("runs past the file", later_pos + 8, struct.pack(">q", 1 << 40)),
        ("negative offset", pos, struct.pack(">q", -5)),
        ("not flattened format version 1", 24, struct.pack(">q", 2)),
    ]:
        copy = tmp_path / "copy.vmcore"
        shutil.copyfile(src, copy)
        with open(copy, "r+b") as f:
            f.seek(at)
            f.write(value)
        assert KdumpReader.open(str(copy)) is None, what
    with open(src, "rb") as f, open(tmp_path / "short.vmcore", "wb") as out:
        out.write(f.read(pos + 16 + size // 2))
    assert KdumpReader.open(str(tmp_path / "short.vmcore")) is None


def _patched_copy(src: str, tmp_path: Path, patch: Any) -> KdumpReader:
    copy = tmp_path / "copy.vmcore"
    shutil.copyfile(src, copy)
    reader = KdumpReader.open(str(copy))
    assert reader is not None
    with open(copy, "r+b") as f:
        patch(f, reader)
    return reader


def _first_desc(reader: KdumpReader, nth: int = 0) -> tuple[int, int]:
    """(PFN, file offset of its descriptor) of the *nth* page in the dump."""
    return int(bitmap_pages(reader)[nth]), reader.descs_offset + 24 * nth


@pytest.mark.parametrize(
    ("what", "desc"),
    [
        ("lzo, not built in", lambda offset, size, flags: (offset, size, 0x2)),
        ("zstd, not built in", lambda offset, size, flags: (offset, size, 0x20)),
        ("stored size past a page", lambda offset, size, flags: (offset, 1 << 20, flags)),
        ("data past the end of the file", lambda offset, size, flags: (1 << 50, size, flags)),
        ("negative offset", lambda offset, size, flags: (-4096, size, flags)),
        ("data that is not zlib", lambda offset, size, flags: (0, size, 0x1)),
        ("raw page of the wrong size", lambda offset, size, flags: (offset, size - 1, 0)),
    ],
)
def test_bad_descriptors_are_refused(
    sample_manifest: dict[str, Any], tmp_path: Path, what: str, desc: Any, inflater: str
) -> None:
    nth = 1000

    def patch(f: Any, reader: KdumpReader) -> None:
        _, at = _first_desc(reader, nth)
        f.seek(at)
        offset, size, flags = struct.unpack("<qII", f.read(16))
        f.seek(at)
        f.write(struct.pack("<qII", *desc(offset, size, flags)))

    reader = _patched_copy(_dump(sample_manifest, "kdump"), tmp_path, patch)
    pfn, _ = _first_desc(reader, nth)
    page = reader.block_size
    assert reader.read(pfn * page, page) == pfn, what
    # The pages before it are still read.
    before, _ = _first_desc(reader, nth - 1)
    assert isinstance(reader.read(before * page, page), bytes)


def test_a_dump_cut_short(sample_manifest: dict[str, Any], tmp_path: Path, inflater: str) -> None:
    src = _dump(sample_manifest, "kdump")
    copy = tmp_path / "short.vmcore"
    size = Path(src).stat().st_size
    with open(src, "rb") as f, open(copy, "wb") as out:
        out.write(f.read(size // 2))
    reader = KdumpReader.open(str(copy))
    assert reader is not None
    pfns = bitmap_pages(reader)
    page = reader.block_size
    results = [reader.read(int(p) * page, page) for p in pfns[:: max(1, len(pfns) // 2000)]]
    assert any(isinstance(r, bytes) for r in results)
    assert any(isinstance(r, int) for r in results)


@pytest.mark.parametrize(
    ("what", "offset", "value"),
    [
        ("not a kdump signature", 0, b"ELFELFEL"),
        ("big-endian header_version", 8, struct.pack(">i", 6)),
        ("block size not a power of two", 8 + 4 + 390 + 6 + 16 + 4, struct.pack("<i", 3000)),
        ("odd bitmap blocks", 8 + 4 + 390 + 6 + 16 + 12, struct.pack("<I", 3)),
    ],
)
def test_headers_it_does_not_read(
    sample_manifest: dict[str, Any], tmp_path: Path, what: str, offset: int, value: bytes
) -> None:
    copy = tmp_path / "copy.vmcore"
    src = _dump(sample_manifest, "kdump")
    with open(src, "rb") as f:
        head = bytearray(f.read(1 << 16))
    head[offset : offset + len(value)] = value
    copy.write_bytes(bytes(head))
    assert KdumpReader.open(str(copy)) is None, what


def test_read_ahead_keeps_order_and_stops_with_its_reader() -> None:
    """Reads made ahead on threads come back in order; a walk left early leaves no thread."""
    import threading
    import time

    from dumpminer.slub.walk import READ_AHEAD, read_ahead

    def slow_square(n: int) -> int:
        time.sleep(0.001 * (n % 3))  # later items often finish first
        return n * n

    items = list(range(100))
    assert list(read_ahead(slow_square, items, parallel=True)) == [(n, n * n) for n in items]
    started = []

    def noted(n: int) -> int:
        started.append(n)
        return n

    walk = read_ahead(noted, items, parallel=True)
    assert next(walk) == (0, 0)
    walk.close()
    assert len(started) <= READ_AHEAD + 2
    assert not [t for t in threading.enumerate() if t.name.startswith("dumpminer-read")]


def test_drgn_reads_when_asked(
    sample_manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DUMPMINER_DRGN_READS=1 leaves every read to drgn; without it, kdump is read by dumpminer."""
    path = _dump(sample_manifest, "kdump")
    assert memory_reader(oracle.open_prog(path, sample_manifest["vmlinux"])).parallel
    monkeypatch.setenv("DUMPMINER_DRGN_READS", "1")
    reader = memory_reader(oracle.open_prog(path, sample_manifest["vmlinux"]))
    assert reader.physical is None and not reader.parallel
