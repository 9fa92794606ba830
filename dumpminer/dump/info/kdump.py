"""
kdump-compressed files: ``makedumpfile -c/-l/-p/-z``, QEMU's ``kdump-*``
formats, plain or reassembled from a flattened stream.

The layout is ``struct disk_dump_header`` (block 0), ``struct
kdump_sub_header`` (block 1), two page bitmaps, then page descriptors and
data (makedumpfile's diskdump_mod.h; crash's diskdump.h names the fields by
header_version). Bitmap 1 marks the pages that exist and bitmap 2 the pages
written: they differ exactly when makedumpfile filtered pages out, and the
sub-header's ``dump_level`` says which kinds (``-d``).
"""

from __future__ import annotations

import re
import struct

from dumpminer.dump.info.facts import Result, cut_short_why, dump_facts, not_a_dump
from dumpminer.dump.info.notes import (
    MAX_NOTE_SEGMENT_BYTES,
    MAX_VMCOREINFO_BYTES,
    find_vmcoreinfo_in_notes,
)
from dumpminer.dump.info.sources import FileSource, FlatSource, Source

__all__ = ["DISKDUMP_SIGNATURE", "KDUMP_SIGNATURE", "MAX_BITMAP_BYTES", "read_kdump"]

KDUMP_SIGNATURE = b"KDUMP   "
DISKDUMP_SIGNATURE = b"DISKDUMP"

#: Largest pair of kdump page bitmaps compared to detect filtering (each half).
MAX_BITMAP_BYTES = 64 << 20

# struct disk_dump_header (diskdump_mod.h).  utsname is 6 x 65 chars; the
# struct timeval that follows is aligned to the size of `long`.
_UTS_LEN = 65
_UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
_DH_TAIL = "IiiIIIIIIi"  # status .. nr_cpus
_DH64 = "8si390s6xqq" + _DH_TAIL  # 464 bytes
_DH32 = "8si390s2xii" + _DH_TAIL  # 452 bytes (i386 alignment)
# struct kdump_sub_header, fields by header_version (see crash's diskdump.h).
_SUB64 = "QiiQQqQqQqQQQQ"  # 104 bytes
_SUB32 = "IiiIIqIqIqIQQQ"  # 4-byte aligned long long (i386)
_SUB_FIELDS = (
    "phys_base",
    "dump_level",  # v1
    "split",  # v2
    "start_pfn",
    "end_pfn",
    "offset_vmcoreinfo",  # v3
    "size_vmcoreinfo",
    "offset_note",  # v4
    "size_note",
    "offset_eraseinfo",  # v5
    "size_eraseinfo",
    "start_pfn_64",  # v6
    "end_pfn_64",
    "max_mapnr_64",
)
_32BIT_MACHINES = re.compile(r"^(i[3-6]86|arm(?!64).*|ppc|mips|mipsel|s390|sh\d*|sparc)$")


def read_kdump(path: str, src: Source, fmt: str, file_size: int) -> Result:
    """
    Read the facts of the kdump file *src* (format name *fmt*).

    :raises NotADumpError: if a header is truncated, corrupt or absurd.
    """
    raw = src.read(0, struct.calcsize("<" + _DH64))
    if len(raw) < struct.calcsize("<" + _DH32):
        raise not_a_dump(path, "kdump header is truncated")
    machine = _cstr(raw[12 + 4 * _UTS_LEN : 12 + 5 * _UTS_LEN])
    is32 = bool(_32BIT_MACHINES.match(machine))
    layout = _DH32 if is32 else _DH64
    order = _kdump_byte_order(raw)
    if order is None:
        version = struct.unpack_from("<i", raw, 8)[0]
        raise not_a_dump(path, f"unsupported kdump header_version {version}")
    need = struct.calcsize(order + layout)
    if len(raw) < need:
        raise not_a_dump(path, "kdump header is truncated")
    (
        _sig,
        version,
        uts,
        tv_sec,
        _tv_usec,
        _status,
        block_size,
        sub_hdr_size,
        bitmap_blocks,
        max_mapnr,
        _total_ram_blocks,
        _device_blocks,
        _written_blocks,
        _current_cpu,
        _nr_cpus,
    ) = struct.unpack_from(order + layout, raw)
    utsname = {
        name: _cstr(uts[i * _UTS_LEN : (i + 1) * _UTS_LEN]) for i, name in enumerate(_UTS_FIELDS)
    }
    if not utsname["machine"]:
        raise not_a_dump(path, "kdump header has no machine name")
    if block_size < 512 or block_size > (1 << 20) or block_size & (block_size - 1):
        raise not_a_dump(path, f"absurd kdump block_size {block_size}")
    if sub_hdr_size < 0 or bitmap_blocks < 0 or bitmap_blocks % 2:
        raise not_a_dump(
            path, f"absurd kdump sub_hdr_size {sub_hdr_size}, bitmap_blocks {bitmap_blocks}"
        )

    if bitmap_blocks == 0 or max_mapnr == 0:
        raise not_a_dump(path, "kdump header describes no memory (bitmap_blocks or max_mapnr is 0)")

    sub: dict[str, int] = {}
    if sub_hdr_size > 0:
        sub_layout = _SUB32 if is32 else _SUB64
        # Only the fields present in this header_version are trusted.
        nfields = {0: 1, 1: 2, 2: 5, 3: 7, 4: 9, 5: 11}.get(version, len(_SUB_FIELDS))
        full = struct.calcsize(order + sub_layout)
        sub_raw = src.read(block_size, full)
        if len(sub_raw) < struct.calcsize(order + sub_layout[:nfields]):
            raise not_a_dump(path, "kdump sub-header is truncated")
        values = struct.unpack(order + sub_layout, sub_raw.ljust(full, b"\0"))
        sub = dict(zip(_SUB_FIELDS[:nfields], values[:nfields], strict=True))
    if sub.get("max_mapnr_64"):
        max_mapnr = sub["max_mapnr_64"]

    vmcoreinfo_raw = _kdump_vmcoreinfo(path, src, sub, order == ">", file_size)

    dump_level = sub.get("dump_level") if version >= 1 else None
    bitmap_at = block_size * (1 + sub_hdr_size)
    half = bitmap_blocks // 2 * block_size
    if half and half * 8 < max_mapnr:
        raise not_a_dump(path, f"kdump bitmap of {half} bytes cannot cover max_mapnr {max_mapnr}")
    if isinstance(src, FileSource) and bitmap_at + 2 * half > file_size:
        raise not_a_dump(
            path,
            f"page bitmaps end at byte {bitmap_at + 2 * half} but the file has "
            f"{file_size} bytes (truncated copy?)",
        )
    compared = _compare_bitmaps(src, bitmap_at, half, max_mapnr)
    page_size = block_size
    cut_short = None
    if compared is not None:
        differ, present_pages, written_pages = compared
        if isinstance(src, FileSource):
            descriptors = bitmap_at + 2 * half
            cut_short = _page_data_cut_short(src, order, descriptors, written_pages, file_size)
        filtered = differ
        phys: int | None = present_pages * page_size
    else:
        filtered = bool(dump_level)
        phys = max_mapnr * page_size if max_mapnr else None
    return dump_facts(
        path,
        fmt,
        utsname["machine"],
        vmcoreinfo_raw,
        release=utsname["release"] or None,
        timestamp=tv_sec,
        block_size=block_size,
        phys_mem_bytes=phys,
        filtered=filtered,
        dump_level=dump_level,
        cut_short=cut_short,
    )


#: ``struct page_desc``: offset, size, flags, page_flags (makedumpfile's diskdump_mod.h).
_PAGE_DESC = "qIIQ"
#: Page descriptors read from the end of the table to find where the page data ends.
_TAIL_DESCRIPTORS = 4096


def _page_data_cut_short(
    src: FileSource, order: str, at: int, written: int, file_size: int
) -> str | None:
    """
    Why the file is cut short, from its page descriptors (one per page
    written, after the bitmaps): the table itself, or the data of its last
    pages, running past the end of the file; None when they fit. Pages are
    written in PFN order, so the last descriptors point at the end of the
    data (all but a shared zero page, which is written first).
    """
    size = struct.calcsize(order + _PAGE_DESC)
    table_end = at + written * size
    if table_end > file_size:
        return cut_short_why(table_end, file_size, "page descriptor table")
    count = min(written, _TAIL_DESCRIPTORS)
    raw = src.read(table_end - count * size, count * size)
    end = 0
    for offset, length, _flags, _page_flags in struct.iter_unpack(order + _PAGE_DESC, raw):
        end = max(end, offset + length)
    return cut_short_why(end, file_size, "page data")


def _kdump_byte_order(raw: bytes) -> str | None:
    """Pick the header's byte order from a plausible header_version/block_size."""
    for order in ("<", ">"):
        version = struct.unpack_from(order + "i", raw, 8)[0]
        if 0 <= version <= 64:
            return order
    return None


def _cstr(b: bytes) -> str:
    """A NUL-terminated header string, decoded as ASCII."""
    return b.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def _kdump_vmcoreinfo(
    path: str, src: Source, sub: dict[str, int], big: bool, file_size: int
) -> bytes | None:
    """VMCOREINFO from the sub-header's own range, else from its note area."""
    off, size = sub.get("offset_vmcoreinfo", 0), sub.get("size_vmcoreinfo", 0)
    if off and size:
        if size > MAX_VMCOREINFO_BYTES or off < 0:
            raise not_a_dump(path, f"absurd VMCOREINFO size {size} at offset {off}")
        if isinstance(src, FileSource) and off + size > file_size:
            raise not_a_dump(path, "VMCOREINFO lies past the end of the file (truncated?)")
        data = src.read(off, size)
        if len(data) < size:
            raise not_a_dump(path, "VMCOREINFO is truncated")
        return data
    noff, nsize = sub.get("offset_note", 0), sub.get("size_note", 0)
    if noff and nsize:
        if noff < 0 or nsize > MAX_NOTE_SEGMENT_BYTES:
            raise not_a_dump(path, f"absurd note size {nsize} at offset {noff}")
        return find_vmcoreinfo_in_notes(src.read, noff, nsize, big)
    return None


def _compare_bitmaps(
    src: Source, at: int, half: int, max_mapnr: int
) -> tuple[bool, int, int] | None:
    """
    Compare the two kdump page bitmaps.

    Return (whether they differ, pages present in bitmap 1, pages written in
    bitmap 2), or ``None`` when they cannot be read within the limits.
    Bitmap 1 marks pages that exist, bitmap 2 the pages written; they differ
    exactly when pages were filtered.
    """
    if half <= 0 or half > MAX_BITMAP_BYTES:
        return None
    nbytes = min(half, (max_mapnr + 7) // 8) if max_mapnr else half
    differ = False
    present = written = 0
    chunk = 1 << 20 if isinstance(src, FileSource) else half
    for start in range(0, nbytes, chunk):
        n = min(chunk, nbytes - start)
        b1 = src.read(at + start, n)
        if isinstance(src, FlatSource) and not src.complete:
            return None
        b2 = src.read(at + half + start, n)
        if isinstance(src, FlatSource) and not src.complete:
            return None
        b1 = b1.ljust(n, b"\0")
        b2 = b2.ljust(n, b"\0")
        differ = differ or b1 != b2
        present += int.from_bytes(b1, "little").bit_count()
        written += int.from_bytes(b2, "little").bit_count()
    if present == 0:
        return None  # no bitmap at all: fall back to the header's word
    return differ, present, written
