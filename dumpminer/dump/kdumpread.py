"""
Reading a kdump-compressed dump's memory on every core.

drgn's :meth:`~drgn.Program.read` inflates kdump pages holding the GIL, so
however many threads a process has, it reads on one core. For the format
most dumps arrive in (makedumpfile's and QEMU's kdump-compressed, zlib),
:class:`KdumpReader` finds each page's descriptor, reads and inflates it in
``dumpminer/dump/_kdump.c`` with the GIL released, so reading threads use every
core (docs/performance.md says what that buys).

drgn stays the reader of everything else: of other formats (ELF, flattened,
split, big-endian), of pages compressed with lzo, snappy or zstd, and of any
page this reader cannot read (not in the dump, data outside a file cut
short): :class:`MemoryReader` then asks drgn, which decides, as before,
whether that is a fault. tests/test_kdumpread.py checks this reader page
for page against drgn's reads on every sample dump. ``DUMPMINER_DRGN_READS=1``
in the environment turns it off (every read is drgn's), to compare.
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
from drgn import FaultError, Object, Program

from dumpminer.dump import _kdump

__all__ = ["KdumpReader", "MemoryReader", "memory_reader"]

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


class KdumpReader:
    """
    Physical memory of one kdump-compressed file, read with the GIL released.
    Threads may share one reader: reads are ``pread`` on one descriptor.
    """

    def __init__(
        self, path: str, block_size: int, descs_offset: int, max_pfn: int, bitmap: bytes
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
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))

    @classmethod
    def open(cls, path: str) -> KdumpReader | None:
        """
        A reader of the kdump-compressed file at *path*, or None when it is
        anything this reader does not read (drgn reads it then).
        """
        try:
            with open(path, "rb") as f:
                return cls._from_file(path, f)
        except (OSError, struct.error, ValueError):
            return None

    @classmethod
    def _from_file(cls, path: str, f: Any) -> KdumpReader | None:
        raw = f.read(_HEADER.size)
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
            f.seek(block_size)
            sub = f.read(_SUB_HEADER.size)
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
        f.seek(block_size * (1 + sub_hdr_size) + half)
        bitmap = f.read(min(half, (max_mapnr + 7) // 8))
        descs_offset = block_size * (1 + sub_hdr_size + bitmap_blocks)
        return cls(path, block_size, descs_offset, max_mapnr, bitmap)

    def read(self, phys: int, size: int, out: Any = None) -> bytes | int | None:
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
        )

    def close(self) -> None:
        """Close the file (a reader shared by threads: after they finish)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class MemoryReader:
    """
    Reads kernel memory for the walk: with a :class:`KdumpReader` when the
    dump is kdump-compressed, through the direct map by subtraction and
    elsewhere (the page array) through the kernel's page tables; everything
    else, and whatever that reader refuses, with drgn. Reads by the
    :class:`KdumpReader` do not hold the GIL while they inflate; drgn's do.
    """

    def __init__(self, prog: Program, kdump: KdumpReader | None) -> None:
        from drgn.helpers.linux.mm import pfn_to_virt

        self.prog = prog
        self.kdump = kdump
        self.page_offset = pfn_to_virt(prog, 0).value_()
        # The direct map's part this reader can translate by subtraction.
        self.direct_end = self.page_offset + (kdump.max_pfn * kdump.block_size if kdump else 0)
        self._pgd: Object | None = None

    @property
    def parallel(self) -> bool:
        """True when reads may run on threads: they release the GIL."""
        return self.kdump is not None

    def read(self, address: int, size: int) -> bytes:
        """
        *size* bytes at the kernel virtual *address*; raises drgn's
        :class:`~drgn.FaultError` when drgn cannot read them either.
        """
        if self.kdump is not None and size > 0:
            data = self._read_kdump(self.kdump, address, size)
            if data is not None:
                return data
        data = self.prog.read(address, size)
        assert isinstance(data, bytes)
        return data

    def _read_kdump(self, kdump: KdumpReader, address: int, size: int) -> bytes | None:
        """The bytes from the kdump file, or None to ask drgn."""
        if self.page_offset <= address and address + size <= self.direct_end:
            data = kdump.read(address - self.page_offset, size)
            return data if isinstance(data, bytes) else None
        pieces = self._physical_pieces(address, size)
        if pieces is None:
            return None
        if len(pieces) == 1:
            data = kdump.read(pieces[0][0], size)
            return data if isinstance(data, bytes) else None
        out = bytearray(size)
        view = memoryview(out)
        at = 0
        for phys, length in pieces:
            if kdump.read(phys, length, view[at : at + length]) is not None:
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

        page = self.kdump.block_size if self.kdump else 4096
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
    kdump = None
    path = _core_dump_path(prog)
    if path is not None and os.environ.get("DUMPMINER_DRGN_READS") != "1":
        kdump = KdumpReader.open(path)
    reader = MemoryReader(prog, kdump)
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
