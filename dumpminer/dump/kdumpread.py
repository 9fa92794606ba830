"""
Reading a dump's physical memory on every core.

drgn's :meth:`~drgn.Program.read` decompresses kdump pages holding the GIL,
so however many threads a process has, it reads on one core. For the
formats dumps arrive in, dumpminer reads the pages itself in
``dumpminer/dump/_kdump.c`` with the GIL released, so reading threads use every
core (docs/performance.md says what that buys):

- :class:`KdumpReader`: kdump-compressed files (makedumpfile ``-c/-l/-p/-z``,
  QEMU's ``kdump-*``; pages compressed with zlib, lzo, snappy or zstd, each
  library loaded at run time when the system has it), plain or in
  makedumpfile's *flattened* form (``makedumpfile -F``, and what QEMU before
  8.2 writes), whose records are indexed once by their headers and then read
  in place as the kdump file they describe;
- :class:`ElfReader`: ELF cores (QEMU's ``dump-guest-memory``, ``makedumpfile
  -E``, copies of ``/proc/vmcore``), with positional reads of their
  ``PT_LOAD`` segments.

drgn stays the reader of everything else (split and big-endian dumps, other
architectures' ELF cores) and of any page these readers cannot read (not in
the dump, a compression whose library is missing, data outside a file cut
short): :class:`MemoryReader` then asks drgn, which decides, as before,
whether that is a fault. tests/test_kdumpread.py checks each reader page for
page against drgn's reads on every sample dump. ``DUMPMINER_DRGN_READS=1``
in the environment turns them off (every read is drgn's), to compare.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
from collections.abc import Callable
from typing import Protocol

import numpy as np
import numpy.typing as npt
from drgn import FaultError, Object, Program

from dumpminer.dump import _kdump

__all__ = [
    "ElfReader",
    "KdumpReader",
    "MemoryReader",
    "PhysicalReader",
    "memory_reader",
    "open_physical_reader",
]

_SIGNATURE = b"KDUMP   "
# struct disk_dump_header on a 64-bit machine: signature, header_version,
# utsname (6 x 65 bytes), padding, timestamp, then status .. nr_cpus.
_HEADER = struct.Struct("<8si390s6xqqIiiIIIIIIi")
# struct kdump_sub_header (64-bit): phys_base, dump_level, split, start_pfn,
# end_pfn, ... max_mapnr_64 is the 14th field (header_version 6 and later).
_SUB_HEADER = struct.Struct("<QiiQQqQqQqQQQQ")
#: Largest bitmap believed (one bit per page: 256 MiB covers 8 TiB of 4 KiB pages).
_MAX_BITMAP_BYTES = 256 << 20
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint64)

# makedumpfile's flattened format: a 4 KiB header (signature, type 1, version
# 1, big-endian) then records {be64 offset, be64 size, data}, the last with
# offset -1.
_FLAT_SIGNATURE = b"makedumpfile\0\0\0\0"
_FLAT_HEADER_SIZE = 4096
#: Most records indexed (QEMU writes one per 16 KiB of data: 16 TiB of dump).
_MAX_FLAT_RECORDS = 1 << 30

# ELF: e_ident, then (64-bit) e_type .. e_shstrndx; program headers.
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_ELF_PHDR = struct.Struct("<IIQQQQQQ")
_EM_X86_64 = 62
_PT_LOAD = 1
#: Page size of the ELF cores read (x86-64's).
_ELF_PAGE_SIZE = 4096


class PhysicalReader(Protocol):
    """What :class:`MemoryReader` reads physical memory with."""

    #: The dump's page size.
    block_size: int
    #: Pages from physical address 0 that the dump may hold.
    max_pfn: int

    def read(self, phys: int, size: int, out: object = None) -> bytes | int | None:
        """*size* bytes at *phys* (or None once written into *out*), or the
        PFN of the first page this reader cannot read, as an int."""
        ...

    def close(self) -> None:
        """Close the file."""
        ...


def _pread_exactly(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise ValueError("short read")
    return data


class _DumpFile:
    """An open dump file, read by ``pread`` on one descriptor (shared by threads)."""

    fd: int

    def close(self) -> None:
        """Close the file (a reader shared by threads: after they finish)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class KdumpReader(_DumpFile):
    """
    Physical memory of one kdump-compressed file, read with the GIL released.
    Threads may share one reader: reads are ``pread`` on one descriptor.
    For a flattened file, *flat* holds its records (see :func:`flat_records`),
    and the offsets are those of the kdump file the records describe.
    """

    def __init__(
        self,
        path: str,
        block_size: int,
        descs_offset: int,
        max_pfn: int,
        bitmap: bytes,
        flat: npt.NDArray[np.int64] | None = None,
        fd: int = -1,
    ) -> None:
        self.path = path
        self.block_size = block_size
        self.descs_offset = descs_offset
        self.max_pfn = max_pfn
        words = np.frombuffer(bitmap.ljust(-(-len(bitmap) // 8) * 8, b"\0"), dtype="<u8")
        counts = _POPCOUNT[words.view(np.uint8)].reshape(-1, 8).sum(axis=1)
        #: The dumpable-page bitmap, and per word the pages set before it:
        #: a page's descriptor is the rank of its bit.
        self.bitmap = np.ascontiguousarray(words, dtype=np.uint64)
        self.rank = np.ascontiguousarray(np.cumsum(counts) - counts, dtype=np.uint64)
        #: The flattened file's records: (offset, position of the data, length) rows.
        self.flat = flat
        self.fd = fd if fd >= 0 else os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    @classmethod
    def open(cls, path: str) -> KdumpReader | None:
        """
        A reader of the kdump-compressed file (plain or flattened) at *path*,
        or None when it is anything this reader does not read (drgn reads it then).
        """
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            reader = cls._from_fd(path, fd)
        except (OSError, struct.error, ValueError):
            reader = None
        if reader is None:
            os.close(fd)
        return reader

    @classmethod
    def _from_fd(cls, path: str, fd: int) -> KdumpReader | None:
        flat = None
        read_at: Callable[[int, int], bytes] = functools.partial(_file_read, fd)
        if os.pread(fd, len(_FLAT_SIGNATURE), 0) == _FLAT_SIGNATURE:
            flat = flat_records(fd)
            if flat is None:
                return None
            read_at = functools.partial(_flat_read, fd, flat)
        raw = read_at(0, _HEADER.size)
        if len(raw) < _HEADER.size or raw[:8] != _SIGNATURE:
            return None
        fields = _HEADER.unpack(raw)
        version, block_size, sub_hdr_size, bitmap_blocks, max_mapnr = (
            fields[1],
            fields[6],
            fields[7],
            fields[8],
            fields[9],
        )
        if not (0 <= version <= 64) or block_size < 512 or block_size & (block_size - 1):
            return None  # big-endian, or nothing makedumpfile writes
        if block_size > (1 << 20) or sub_hdr_size < 0 or bitmap_blocks <= 0 or bitmap_blocks % 2:
            return None
        if sub_hdr_size > 0:
            sub = read_at(block_size, _SUB_HEADER.size)
            if len(sub) < _SUB_HEADER.size:
                return None
            values = _SUB_HEADER.unpack(sub)
            if version >= 2 and values[2]:
                return None  # one part of a split dump
            if version >= 6 and values[13]:
                max_mapnr = values[13]
        half = bitmap_blocks // 2 * block_size
        if max_mapnr <= 0 or half > _MAX_BITMAP_BYTES:
            return None
        # The second bitmap marks the pages written: descriptors follow it,
        # one per page it marks, in PFN order.
        bitmap = read_at(block_size * (1 + sub_hdr_size) + half, min(half, (max_mapnr + 7) // 8))
        descs_offset = block_size * (1 + sub_hdr_size + bitmap_blocks)
        return cls(path, block_size, descs_offset, max_mapnr, bitmap, flat, fd)

    def read(self, phys: int, size: int, out: object = None) -> bytes | int | None:
        """
        Read *size* bytes of physical memory at *phys*: a new bytes object,
        or None after writing them into the buffer *out*; or the PFN of the
        first page this reader cannot read (as an int), to ask drgn.
        """
        return _kdump.read(
            self.fd,
            self.block_size,
            self.descs_offset,
            self.max_pfn,
            self.bitmap,
            self.rank,
            phys,
            size,
            out,
            self.flat,
        )


def flat_records(fd: int) -> npt.NDArray[np.int64] | None:
    """
    The records of the flattened file open as *fd*, read once by their
    headers: rows of (offset in the kdump file, position of the data in
    *fd*, length), sorted by offset. None when a record is corrupt, runs past
    the end of the file, or overlaps another (a later record would then
    overwrite part of an earlier one: drgn reads such a file).
    """
    size = os.fstat(fd).st_size
    header = os.pread(fd, 32, 0)
    if len(header) < 32 or struct.unpack(">qq", header[16:32]) != (1, 1):
        return None
    raw = _kdump.flat_records(fd, _FLAT_HEADER_SIZE, size, _MAX_FLAT_RECORDS)
    if raw is None:
        return None
    records = np.frombuffer(raw, dtype=np.int64).reshape(-1, 3)
    records = records[np.argsort(records[:, 0], kind="stable")]
    if len(records) > 1 and np.any(records[1:, 0] < records[:-1, 0] + records[:-1, 2]):
        return None
    return np.ascontiguousarray(records)


def _file_read(fd: int, offset: int, size: int) -> bytes:
    """[offset, offset + size) of the file *fd*; short at its end."""
    return os.pread(fd, size, offset)


def _flat_read(fd: int, records: npt.NDArray[np.int64], offset: int, size: int) -> bytes:
    """[offset, offset + size) of the kdump file the *records* describe; short at a gap."""
    out = bytearray()
    at = offset
    i = int(np.searchsorted(records[:, 0], at, side="right")) - 1
    while at < offset + size and 0 <= i < len(records):
        start, pos, length = (int(v) for v in records[i])
        if not start <= at < start + length:
            break
        take = min(offset + size, start + length) - at
        out += _pread_exactly(fd, take, pos + at - start)
        at += take
        i += 1
    return bytes(out)


class ElfReader(_DumpFile):
    """
    Physical memory of an ELF core (x86-64, little-endian), read with one
    ``pread`` per segment a read crosses, the GIL released. Bytes a segment
    does not hold in the file (past its ``p_filesz``, or between segments)
    are left to drgn.
    """

    def __init__(self, path: str, fd: int, segments: npt.NDArray[np.int64]) -> None:
        self.path = path
        self.fd = fd
        #: (physical address, bytes in the file, file offset) of each PT_LOAD, sorted.
        self.segments = segments
        self.block_size = _ELF_PAGE_SIZE
        ends = segments[:, 0] + segments[:, 1]
        self.max_pfn = int(-(-int(ends.max()) // _ELF_PAGE_SIZE)) if len(segments) else 0

    @classmethod
    def open(cls, path: str) -> ElfReader | None:
        """A reader of the ELF core at *path*, or None for anything else."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        try:
            segments = elf_segments(fd)
        except (OSError, struct.error, ValueError):
            segments = None
        if segments is None:
            os.close(fd)
            return None
        return cls(path, fd, segments)

    def read(self, phys: int, size: int, out: object = None) -> bytes | int | None:
        """As :meth:`KdumpReader.read`."""
        return _kdump.read_elf(self.fd, self.block_size, self.segments, phys, size, out)


def elf_segments(fd: int) -> npt.NDArray[np.int64] | None:
    """
    (physical address, file size, file offset) rows of the ``PT_LOAD``
    segments of the x86-64 little-endian ELF core open as *fd*, sorted by
    address; None for any other file, or segments that overlap.
    """
    header = os.pread(fd, _ELF_HEADER.size, 0)
    if len(header) < _ELF_HEADER.size or header[:4] != b"\x7fELF" or header[4:6] != b"\x02\x01":
        return None
    fields = _ELF_HEADER.unpack(header)
    e_type, e_machine, e_phoff, e_phentsize, e_phnum = (
        fields[1], fields[2], fields[5], fields[9], fields[10],
    )  # fmt: skip
    if e_type != 4 or e_machine != _EM_X86_64 or e_phentsize < _ELF_PHDR.size:
        return None
    if e_phnum in (0, 0xFFFF):
        return None  # PN_XNUM: the count is in a section header; drgn reads those
    table = _pread_exactly(fd, e_phentsize * e_phnum, e_phoff)
    rows = []
    for i in range(e_phnum):
        p_type, _, p_offset, _, p_paddr, p_filesz, _, _ = _ELF_PHDR.unpack_from(
            table, i * e_phentsize
        )
        if p_type == _PT_LOAD and p_filesz > 0:
            if p_offset >= 1 << 62 or p_paddr >= 1 << 62 or p_filesz >= 1 << 62:
                return None
            rows.append((p_paddr, p_filesz, p_offset))
    segments = np.array(sorted(rows), dtype=np.int64).reshape(-1, 3)
    if len(segments) > 1 and np.any(segments[1:, 0] < segments[:-1, 0] + segments[:-1, 1]):
        return None
    return np.ascontiguousarray(segments)


def open_physical_reader(path: str) -> PhysicalReader | None:
    """The reader of the dump at *path*: kdump (plain or flattened), ELF, or None."""
    kdump = KdumpReader.open(path)
    if kdump is not None:
        return kdump
    return ElfReader.open(path)


class MemoryReader:
    """
    Reads kernel memory for the walk: with a :class:`PhysicalReader` of the
    dump file (:class:`KdumpReader`, :class:`ElfReader`), through the direct
    map by subtraction and elsewhere (the page array) through the kernel's
    page tables; everything else, and whatever that reader refuses, with
    drgn. The physical reader's reads do not hold the GIL; drgn's do.
    """

    def __init__(self, prog: Program, physical: PhysicalReader | None) -> None:
        from drgn.helpers.linux.mm import pfn_to_virt

        self.prog = prog
        #: The reader of the dump file, or None when every read is drgn's.
        self.physical = physical
        self.page_offset = pfn_to_virt(prog, 0).value_()
        # The direct map's part this reader can translate by subtraction.
        self.direct_end = self.page_offset + (
            physical.max_pfn * physical.block_size if physical else 0
        )
        self._pgd: Object | None = None

    @property
    def parallel(self) -> bool:
        """True when reads may run on threads: they release the GIL."""
        return self.physical is not None

    def read(self, address: int, size: int) -> bytes:
        """
        *size* bytes at the kernel virtual *address*; raises drgn's
        :class:`~drgn.FaultError` when drgn cannot read them either.
        """
        if self.physical is not None and size > 0:
            data = self._read_physical(self.physical, address, size)
            if data is not None:
                return data
        data = self.prog.read(address, size)
        assert isinstance(data, bytes)
        return data

    def _read_physical(self, physical: PhysicalReader, address: int, size: int) -> bytes | None:
        """The bytes from the dump file, or None to ask drgn."""
        if self.page_offset <= address and address + size <= self.direct_end:
            data = physical.read(address - self.page_offset, size)
            return data if isinstance(data, bytes) else None
        pieces = self._physical_pieces(address, size)
        if pieces is None:
            return None
        if len(pieces) == 1:
            data = physical.read(pieces[0][0], size)
            return data if isinstance(data, bytes) else None
        out = bytearray(size)
        view = memoryview(out)
        at = 0
        for phys, length in pieces:
            if physical.read(phys, length, view[at : at + length]) is not None:
                return None
            at += length
        return bytes(out)

    def _physical_pieces(self, address: int, size: int) -> list[tuple[int, int]] | None:
        """
        ``(physical address, length)`` of the pieces of [address, address +
        size) that are contiguous in physical memory, from the kernel's page
        tables; None when a page is not mapped (drgn says what that means).
        """
        # follow_phys()'s C half, without an Object per page; private to
        # drgn, so a drgn without it leaves the read to drgn itself.
        try:
            from drgn.helpers.linux.mm import (  # type: ignore[attr-defined]
                _linux_helper_follow_phys,
            )
        except ImportError:
            return None

        page = self.physical.block_size if self.physical else 4096
        if self._pgd is None:
            try:
                self._pgd = self.prog["init_mm"].pgd
            except (KeyError, LookupError):
                return None
        pieces: list[tuple[int, int]] = []
        at = address
        end = address + size
        try:
            while at < end:
                length = min(end, (at // page + 1) * page) - at
                phys = _linux_helper_follow_phys(self.prog, self._pgd, at)
                if pieces and pieces[-1][0] + pieces[-1][1] == phys:
                    pieces[-1] = (pieces[-1][0], pieces[-1][1] + length)
                else:
                    pieces.append((phys, length))
                at += length
        except FaultError:
            return None
        return pieces


def memory_reader(prog: Program) -> MemoryReader:
    """
    The :class:`MemoryReader` of *prog*, made once per program (kept in
    ``prog.cache``): the dump's bitmap is read once, not per walk.
    """
    cached = prog.cache.get("dumpminer.memory_reader")
    if isinstance(cached, MemoryReader):
        return cached
    physical = None
    path = _core_dump_path(prog)
    if path is not None and os.environ.get("DUMPMINER_DRGN_READS") != "1":
        physical = open_physical_reader(path)
    reader = MemoryReader(prog, physical)
    prog.cache["dumpminer.memory_reader"] = reader
    return reader


def _core_dump_path(prog: Program) -> str | None:
    """The dump file drgn reads, if it reads one (not a live kernel)."""
    try:
        path = prog.core_dump_path
    except AttributeError:
        return None
    if not isinstance(path, str) or path.startswith("/proc/"):
        return None
    return path


def bitmap_pages(reader: KdumpReader) -> npt.NDArray[np.uint64]:
    """PFNs of every page in the dump, ascending (for tests)."""
    bits = np.unpackbits(reader.bitmap.view(np.uint8), bitorder="little")
    return np.flatnonzero(bits[: reader.max_pfn]).astype(np.uint64)
