"""Helpers of tests/test_hostile.py: damaged copies of the real ELF sample dumps.

QEMU's ELF dumps map physical memory linearly: a physical address lives at a
file offset found from the PT_LOAD headers. Here the headers are read, bytes
are patched at physical addresses, and a dump is re-laid out so that chosen
physical ranges come last in the file (then cutting the file loses exactly
those ranges, the way a copy that ran out of disk loses its tail).
"""

from __future__ import annotations

import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

PT_LOAD = 1
PT_NOTE = 4
_PHDR = struct.Struct("<IIQQQQQQ")


@dataclass(frozen=True)
class Segment:
    """One program header of an ELF64 little-endian core."""

    type: int
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int

    def pack(self) -> bytes:
        return _PHDR.pack(
            self.type,
            self.flags,
            self.offset,
            self.vaddr,
            self.paddr,
            self.filesz,
            self.memsz,
            self.align,
        )


def read_segments(path: Path | str) -> tuple[bytes, list[Segment]]:
    """The 64-byte ELF header and the program headers of the core at *path*."""
    with open(path, "rb") as f:
        ehdr = f.read(64)
        assert ehdr[:4] == b"\x7fELF" and ehdr[4] == 2 and ehdr[5] == 1
        phoff = struct.unpack_from("<Q", ehdr, 32)[0]
        phentsize, phnum = struct.unpack_from("<HH", ehdr, 54)
        f.seek(phoff)
        raw = f.read(phentsize * phnum)
    segments = [Segment(*_PHDR.unpack_from(raw, i * phentsize)) for i in range(phnum)]
    return ehdr, segments


def phys_to_offset(segments: list[Segment], phys: int) -> int:
    """The file offset of physical address *phys*."""
    for seg in segments:
        if seg.type == PT_LOAD and seg.paddr <= phys < seg.paddr + seg.filesz:
            return seg.offset + phys - seg.paddr
    raise ValueError(f"physical address {phys:#x} is not in the dump")


def patch(path: Path, segments: list[Segment], phys: int, data: bytes) -> None:
    """Overwrite the bytes at physical address *phys* of the ELF core at *path*."""
    with open(path, "r+b") as f:
        f.seek(phys_to_offset(segments, phys))
        f.write(data)


def read_phys(path: Path, segments: list[Segment], phys: int, size: int) -> bytes:
    """Read *size* bytes of physical memory *phys* from the ELF dump at *path*."""
    with open(path, "rb") as f:
        f.seek(phys_to_offset(segments, phys))
        return f.read(size)


def copy(src: str, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def relayout(src: str, dst: Path, last: list[tuple[int, int]]) -> int:
    """
    Write a copy of the ELF core *src* to *dst* whose memory is the same but
    whose physical ranges *last* ([start, end) pairs, sorted, page aligned,
    each inside one PT_LOAD: a NUMA guest has one per node) are stored at the
    end of the file, in order. Returns the file offset where the first of them
    starts.
    """
    ehdr, segments = read_segments(src)
    notes = [s for s in segments if s.type == PT_NOTE]
    loads = [s for s in segments if s.type == PT_LOAD]

    def owner(lo: int, hi: int) -> Segment:
        for seg in loads:
            if seg.paddr <= lo < hi <= seg.paddr + seg.filesz:
                return seg
        raise AssertionError(f"{lo:#x}-{hi:#x} is not inside one PT_LOAD")

    kept: list[tuple[Segment, int, int]] = []  # pieces staying in place, in file order
    for seg in loads:
        cursor = seg.paddr
        for lo, hi in last:
            if owner(lo, hi) is not seg:
                continue
            assert cursor <= lo
            if cursor < lo:
                kept.append((seg, cursor, lo))
            cursor = hi
        if cursor < seg.paddr + seg.filesz:
            kept.append((seg, cursor, seg.paddr + seg.filesz))
    moved = [(owner(lo, hi), lo, hi) for lo, hi in last]
    phnum = len(notes) + len(kept) + len(moved)
    pos = 64 + phnum * _PHDR.size
    new: list[Segment] = []
    copies: list[tuple[int, int, int]] = []  # (source offset, length, dest offset)
    for note in notes:
        new.append(Segment(PT_NOTE, note.flags, pos, 0, 0, note.filesz, note.memsz, note.align))
        copies.append((note.offset, note.filesz, pos))
        pos += note.filesz

    def add(seg: Segment, lo: int, hi: int) -> None:
        nonlocal pos
        vaddr = seg.vaddr + (lo - seg.paddr) if seg.vaddr else 0
        new.append(Segment(PT_LOAD, seg.flags, pos, vaddr, lo, hi - lo, hi - lo, seg.align))
        copies.append((seg.offset + lo - seg.paddr, hi - lo, pos))
        pos += hi - lo

    for seg, lo, hi in kept:
        add(seg, lo, hi)
    moved_at = pos
    for seg, lo, hi in moved:
        add(seg, lo, hi)
    head = bytearray(ehdr)
    struct.pack_into("<Q", head, 32, 64)  # e_phoff
    struct.pack_into("<HH", head, 54, _PHDR.size, phnum)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(bytes(head) + b"".join(s.pack() for s in new))
        for source, length, dest in copies:
            assert fout.tell() == dest
            fin.seek(source)
            left = length
            while left:
                chunk = fin.read(min(left, 16 << 20))
                assert chunk
                fout.write(chunk)
                left -= len(chunk)
    return moved_at


def without_pages(src: str, dst: Path, holes: list[int], page_size: int = 4096) -> None:
    """
    Write a copy of the ELF core *src* to *dst* that lacks the physical pages
    starting at *holes*: the program headers are split around them, as if the
    dump had never held them (a dump cut short, a filtered page), while every
    other byte stays at its physical address.
    """
    ehdr, segments = read_segments(src)
    new: list[Segment] = []
    for seg in segments:
        pieces = [(seg.paddr, seg.paddr + seg.filesz)]
        if seg.type == PT_LOAD:
            for hole in sorted(holes):
                cut = []
                for lo, hi in pieces:
                    if lo <= hole < hi:
                        cut += [(lo, hole), (hole + page_size, hi)]
                    else:
                        cut.append((lo, hi))
                pieces = [(lo, hi) for lo, hi in cut if hi > lo]
        for lo, hi in pieces:
            delta = lo - seg.paddr
            vaddr = seg.vaddr + delta if seg.vaddr else 0
            size = hi - lo if seg.type == PT_LOAD else seg.filesz
            memsz = size if seg.type == PT_LOAD else seg.memsz
            new.append(Segment(seg.type, seg.flags, seg.offset + delta, vaddr, lo, size, memsz,
                               seg.align))
    # The original bytes follow the new headers, shifted by a whole number of pages.
    table = 64 + len(new) * _PHDR.size
    shift = -(-table // page_size) * page_size
    new = [Segment(s.type, s.flags, s.offset + shift, s.vaddr, s.paddr, s.filesz, s.memsz,
                   s.align) for s in new]  # fmt: skip
    head = bytearray(ehdr)
    struct.pack_into("<Q", head, 32, 64)  # e_phoff
    struct.pack_into("<Q", head, 40, 0)  # e_shoff: no section headers
    struct.pack_into("<HHH", head, 58, 0, 0, 0)  # e_shentsize, e_shnum, e_shstrndx
    struct.pack_into("<HH", head, 54, _PHDR.size, len(new))
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(bytes(head) + b"".join(s.pack() for s in new))
        fout.write(bytes(shift - fout.tell()))
        shutil.copyfileobj(fin, fout, 16 << 20)
