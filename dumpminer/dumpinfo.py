"""
What a dump is, read from its headers alone (no debuginfo needed).

:func:`read_dump_info` identifies the three containers dumpminer accepts —
ELF cores (``/proc/vmcore`` copies, ``makedumpfile -E``, QEMU
``dump-guest-memory``), kdump-compressed files (``makedumpfile -c/-l/-p``,
QEMU >= 8.2 ``kdump-raw-*`` formats)
and the *flattened* kdump stream (``makedumpfile -F``, and what QEMU
writes for ``kdump-zlib/lzo/snappy``) — and reports the facts needed to pick a vmlinux and
to judge the dump: kernel release, build ID, page size, how much memory it
covers and whether pages were filtered out.

Every size read from a header is checked against the file size and capped
before anything is allocated, so a corrupt or hostile file is refused with a
:class:`~dumpminer.errors.NotADumpError` in bounded time and memory.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from dumpminer.errors import ArchitectureError, InputFileError, NotADumpError, show_path

__all__ = [
    "SUPPORTED_ARCHES",
    "DumpInfo",
    "check_architecture",
    "iter_elf_notes",
    "parse_vmcoreinfo",
    "read_dump_info",
    "read_vmcoreinfo_text",
]

#: Architectures dumpminer can walk (the slab walker assumes x86_64 layouts).
SUPPORTED_ARCHES = ("x86_64",)

#: Largest VMCOREINFO text accepted (the kernel's own limit is one page).
MAX_VMCOREINFO_BYTES = 1 << 20
#: Most bytes of one note area (PT_NOTE segment, kdump note area) read looking
#: for VMCOREINFO; per-CPU notes of 8192 CPUs take about 3 MiB.
MAX_NOTE_SEGMENT_BYTES = 16 << 20
#: Largest pair of kdump page bitmaps compared to detect filtering (each half).
MAX_BITMAP_BYTES = 64 << 20
#: Most records of a flattened stream scanned before giving up on a range.
MAX_FLAT_RECORDS = 1 << 20

_ELF_MAGIC = b"\x7fELF"
_KDUMP_SIGNATURE = b"KDUMP   "
_DISKDUMP_SIGNATURE = b"DISKDUMP"
_FLAT_SIGNATURE = b"makedumpfile"
_FLAT_HEADER_SIZE = 4096
_FLAT_END = -1

_COMPRESSED_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\x04\x22\x4d\x18", "lz4"),
)

# ELF constants (kept local: only a handful are needed).
_PT_LOAD = 1
_PT_NOTE = 4
_ET_CORE = 4
_ELF_MACHINES: dict[str, str] = {
    "EM_X86_64": "x86_64",
    "EM_386": "i386",
    "EM_AARCH64": "aarch64",
    "EM_ARM": "arm",
    "EM_S390": "s390x",
    "EM_RISCV": "riscv64",
    "EM_LOONGARCH": "loongarch64",
    "EM_MIPS": "mips",
    "EM_SPARCV9": "sparc64",
}

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


@dataclass(frozen=True)
class DumpInfo:
    """
    Facts about a vmcore taken from its headers, without debuginfo.

    :ivar path: The file the facts were read from.
    :ivar format: ``"elf"``, ``"kdump"`` or ``"kdump-flattened"``.
    :ivar arch: Machine name, e.g. ``"x86_64"`` (ELF ``e_machine`` or kdump
        ``utsname.machine``).
    :ivar osrelease: Kernel release from VMCOREINFO ``OSRELEASE`` (kdump
        ``utsname.release`` when there is no VMCOREINFO), or ``None``.
    :ivar build_id: VMCOREINFO ``BUILD-ID`` in lower-case hex, or ``None``.
    :ivar crash_time: VMCOREINFO ``CRASHTIME``, else the kdump header
        timestamp, in Unix seconds; ``None`` if absent or zero.
    :ivar page_size: VMCOREINFO ``PAGESIZE``, else the kdump block size.
    :ivar kerneloffset: KASLR offset from VMCOREINFO ``KERNELOFFSET``.
    :ivar phys_mem_bytes: Physical memory the dump describes: the union of the
        ELF ``PT_LOAD`` physical ranges, or for kdump the pages present in the
        first bitmap (``max_mapnr * page_size`` when the bitmap is unreadable).
    :ivar filtered: Whether pages were left out of the dump (see docs/info.md).
    :ivar dump_level: makedumpfile dump level from the kdump sub-header,
        ``None`` when the format does not record it.
    :ivar vmcoreinfo: Every ``KEY=VALUE`` line of VMCOREINFO.
    """

    path: str
    format: str
    arch: str
    osrelease: str | None
    build_id: str | None
    crash_time: int | None
    page_size: int | None
    kerneloffset: int | None
    phys_mem_bytes: int | None
    filtered: bool
    dump_level: int | None
    vmcoreinfo: dict[str, str] = field(default_factory=dict)


def _bad(path: str, what: str) -> NotADumpError:
    return NotADumpError(f"{show_path(path)} is not a vmcore dumpminer can read: {what}")


# --------------------------------------------------------------------------
# Byte sources: a plain file, or a flattened stream reassembled on demand.
# --------------------------------------------------------------------------


class _FileSource:
    """Random access to a plain file; reads beyond EOF come back short."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        self._f.seek(offset)
        return self._f.read(min(length, self.size - offset))


class _FlatSource:
    """
    Byte ranges of the dump a flattened stream describes.

    The stream is a 4 KiB header then records ``{be64 offset, be64 size,
    data}`` ending with offset -1.  Each :meth:`read` scans the records from
    the start (at most :data:`MAX_FLAT_RECORDS` of them) copying whatever
    overlaps the wanted range; bytes no record wrote read as zero, as they
    would after ``makedumpfile -R``.  Headers and bitmaps come first in the
    stream, so these scans stop early.
    """

    def __init__(self, f: BinaryIO, size: int, path: str) -> None:
        self._f = f
        self._file_size = size
        self._path = path
        #: Whether the last read saw every record it needed.
        self.complete = True

    def _records(self) -> Iterator[tuple[int, int, int]]:
        """Yield (dump offset, size, file position of data)."""
        pos = _FLAT_HEADER_SIZE
        for _ in range(MAX_FLAT_RECORDS):
            self._f.seek(pos)
            head = self._f.read(16)
            if len(head) < 16:
                return  # stream cut short: treat as its end
            offset, size = struct.unpack(">qq", head)
            if offset == _FLAT_END:
                return
            if offset < 0 or size < 0 or size > self._file_size:
                raise _bad(self._path, f"corrupt flattened record at byte {pos}")
            yield offset, size, pos + 16
            pos += 16 + size
        self.complete = False

    def read(self, offset: int, length: int) -> bytes:
        """Reassemble ``[offset, offset + length)``; the result may be short
        only if no record reached that far."""
        if length <= 0:
            return b""
        buf = bytearray(length)
        # One byte per byte asked for: marking is linear in what records
        # bring, however many tiny records a hostile stream holds.
        covered = bytearray(length)
        todo = length
        end = offset + length
        high = 0
        self.complete = True
        for roff, rsize, dpos in self._records():
            lo, hi = max(roff, offset), min(roff + rsize, end)
            if lo >= hi:
                continue
            self._f.seek(dpos + (lo - roff))
            chunk = self._f.read(hi - lo)
            buf[lo - offset : lo - offset + len(chunk)] = chunk
            high = max(high, lo - offset + len(chunk))
            piece = slice(lo - offset, lo - offset + len(chunk))
            todo -= covered[piece].count(0)
            covered[piece] = b"\x01" * len(chunk)
            if todo <= 0:
                break
        return bytes(buf[:high]) if todo > 0 else bytes(buf)


# --------------------------------------------------------------------------
# VMCOREINFO
# --------------------------------------------------------------------------


def parse_vmcoreinfo(text: bytes | str) -> dict[str, str]:
    """
    Parse VMCOREINFO text into a dict of its ``KEY=VALUE`` lines.

    Lines without ``=`` and trailing NUL padding are ignored; on a repeated
    key the last value wins, as in the kernel's reader.
    """
    if isinstance(text, bytes):
        text = text.split(b"\0", 1)[0].decode("utf-8", "replace")
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key:
            out[key.strip()] = value.strip()
    return out


def iter_elf_notes(data: bytes, big_endian: bool) -> Iterator[tuple[bytes, int, bytes]]:
    """
    Yield ``(name, type, desc)`` for each ELF note in ``data``.

    Names and descriptors are 4-byte padded (the layout of Linux cores and of
    ``.note.*`` sections); a note running past the end of ``data`` ends the walk.
    """
    fmt = ">III" if big_endian else "<III"
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(fmt, data, pos)
        name_at = pos + 12
        desc_at = name_at + ((namesz + 3) & ~3)
        end = desc_at + ((descsz + 3) & ~3)
        if desc_at + descsz > len(data):
            return
        name = data[name_at : name_at + namesz].rstrip(b"\0")
        yield name, ntype, data[desc_at : desc_at + descsz]
        pos = end


def _find_vmcoreinfo_in_notes(
    read: Callable[[int, int], bytes], start: int, length: int, big_endian: bool
) -> bytes | None:
    """Return the VMCOREINFO note's text from the notes in ``[start, start +
    length)``, read in one piece of at most :data:`MAX_NOTE_SEGMENT_BYTES`."""
    data = read(start, min(length, MAX_NOTE_SEGMENT_BYTES))
    for name, _, desc in iter_elf_notes(data, big_endian):
        if name == b"VMCOREINFO":
            return desc if len(desc) <= MAX_VMCOREINFO_BYTES else None
    return None


def read_vmcoreinfo_text(path: str | os.PathLike[str]) -> str | None:
    """
    Return the raw VMCOREINFO text of a dump, or ``None`` if it has none.

    :raises InputFileError: if the file cannot be read.
    :raises NotADumpError: if the file is not a readable vmcore.
    """
    raw = _read(path)[1]
    if not raw:
        return None
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


_Result = tuple[DumpInfo, bytes | None]


def read_dump_info(path: str | os.PathLike[str], *, truncated_data_ok: bool = False) -> DumpInfo:
    """
    Identify a vmcore and read its header facts.

    >>> info = read_dump_info("/var/crash/202401011200/dump.202401011200")
    >>> info.format, info.arch, info.osrelease
    ('kdump', 'x86_64', '6.1.0-18-amd64')

    :param path: The dump file.
    :raises InputFileError: if the file is missing or unreadable.
    :raises NotADumpError: if it is not a vmcore in a format dumpminer reads,
        or its headers are corrupt or truncated.
    :param truncated_data_ok: Accept an ELF dump cut inside its memory
        segments (the headers and notes whole): drgn reads what is left and
        the walk counts what is missing as faults.
    """
    return _read(path, truncated_data_ok)[0]


def _read(path: str | os.PathLike[str], truncated_data_ok: bool = False) -> _Result:
    spath = os.fsdecode(path)
    try:
        f = open(spath, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise InputFileError(f"cannot read VMCORE {show_path(spath)}: {e.strerror or e}") from e
    try:
        with f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_FLAT_HEADER_SIZE)
            return _identify(spath, f, size, head, truncated_data_ok)
    except OSError as e:
        raise InputFileError(f"cannot read VMCORE {show_path(spath)}: {e.strerror or e}") from e
    except (struct.error, ValueError, OverflowError, IndexError, MemoryError) as e:
        raise _bad(spath, f"corrupt header ({type(e).__name__})") from e


def _identify(
    path: str, f: BinaryIO, size: int, head: bytes, truncated_data_ok: bool = False
) -> _Result:
    if not head:
        raise _bad(path, "the file is empty")
    if head.startswith(_ELF_MAGIC):
        return _read_elf(path, f, size, truncated_data_ok)
    if head.startswith(_KDUMP_SIGNATURE):
        return _read_kdump(path, _FileSource(f, size), "kdump", size)
    if head.startswith(_FLAT_SIGNATURE):
        if len(head) < _FLAT_HEADER_SIZE:
            raise _bad(path, "flattened header is truncated")
        sig = head[:16].rstrip(b"\0")
        ftype, fversion = struct.unpack_from(">qq", head, 16)
        if sig != _FLAT_SIGNATURE or ftype != 1:
            raise _bad(path, f"unknown makedumpfile flattened type {ftype}")
        if fversion < 1:
            raise _bad(path, f"unknown makedumpfile flattened version {fversion}")
        src = _FlatSource(f, size, path)
        inner = src.read(0, 8)
        if inner.startswith(_ELF_MAGIC[:4]):
            raise _bad(
                path,
                "it is a flattened ELF dump; reassemble it with 'makedumpfile -R OUT < FILE'",
            )
        if inner != _KDUMP_SIGNATURE:
            raise _bad(path, "flattened stream does not hold a kdump header")
        return _read_kdump(path, src, "kdump-flattened", size)
    if head.startswith(_DISKDUMP_SIGNATURE):
        raise _bad(path, "old diskdump format (DISKDUMP) is not supported")
    for magic, name in _COMPRESSED_MAGICS:
        if head.startswith(magic):
            raise _bad(path, f"it is {name}-compressed; decompress it first")
    raise _bad(path, f"unknown signature 0x{head[:8].hex()} (expected ELF, KDUMP or makedumpfile)")


# --------------------------------------------------------------------------
# ELF cores
# --------------------------------------------------------------------------


def _read_elf(path: str, f: BinaryIO, size: int, truncated_data_ok: bool = False) -> _Result:
    # Imported lazily: pyelftools is only needed for ELF dumps.
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(f)
        hdr = elf.header
        if hdr["e_type"] != "ET_CORE":
            raise _bad(path, f"ELF file of type {hdr['e_type']}, not a core (ET_CORE)")
        phnum = elf.num_segments()
        phentsize = hdr["e_phentsize"]
        if phnum == 0:
            raise _bad(path, "ELF core without program headers")
        if phentsize < (56 if elf.elfclass == 64 else 32):
            raise _bad(path, f"bad ELF e_phentsize {phentsize}")
        if hdr["e_phoff"] + phnum * phentsize > size:
            raise _bad(path, "program headers extend past the end of the file (truncated?)")
        machine = hdr["e_machine"]
        little = elf.little_endian
        phdrs = [
            (
                seg["p_type"],
                seg["p_offset"],
                seg["p_paddr"],
                seg["p_filesz"],
                seg["p_memsz"],
            )
            for seg in (elf.get_segment(i) for i in range(phnum))
        ]
    except (NotADumpError, OSError):
        raise
    except ELFError as e:
        raise _bad(path, f"corrupt ELF header ({e})") from e
    except Exception as e:  # pyelftools/construct raise many kinds on bad input
        raise _bad(path, f"corrupt ELF header ({type(e).__name__})") from e

    arch = _elf_arch(machine, little)
    src = _FileSource(f, size)
    vmcoreinfo_raw: bytes | None = None
    loads: list[tuple[int, int]] = []
    filtered = False
    for ptype, off, paddr, filesz, memsz in phdrs:
        ptype_num = _PT_NOTE if ptype == "PT_NOTE" else _PT_LOAD if ptype == "PT_LOAD" else ptype
        if off + filesz > size and not (truncated_data_ok and ptype_num == _PT_LOAD):
            raise _bad(
                path,
                f"segment at file offset {off} of {filesz} bytes ends past the end "
                f"of the {size}-byte file (truncated copy?)",
            )
        if ptype_num == _PT_NOTE and vmcoreinfo_raw is None:
            vmcoreinfo_raw = _find_vmcoreinfo_in_notes(src.read, off, filesz, not little)
        elif ptype_num == _PT_LOAD:
            if memsz:
                loads.append((paddr, paddr + memsz))
            if filesz < memsz:
                filtered = True
    phys = _union_size(loads) if loads else None
    return _finish(
        path,
        "elf",
        arch,
        vmcoreinfo_raw,
        release=None,
        timestamp=None,
        block_size=None,
        phys_mem_bytes=phys,
        filtered=filtered,
        dump_level=None,
    )


def _elf_arch(machine: object, little: bool) -> str:
    if machine == "EM_PPC64":
        return "ppc64le" if little else "ppc64"
    if isinstance(machine, str):
        return _ELF_MACHINES.get(machine, machine.removeprefix("EM_").lower())
    return f"elf-machine-{machine}"


def _union_size(ranges: list[tuple[int, int]]) -> int:
    total = 0
    cur_lo = cur_hi = -1
    for lo, hi in sorted(ranges):
        if lo > cur_hi:
            total += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    return total + cur_hi - cur_lo


# --------------------------------------------------------------------------
# kdump-compressed (plain and flattened)
# --------------------------------------------------------------------------


def _read_kdump(path: str, src: _FileSource | _FlatSource, fmt: str, file_size: int) -> _Result:
    raw = src.read(0, struct.calcsize("<" + _DH64))
    if len(raw) < struct.calcsize("<" + _DH32):
        raise _bad(path, "kdump header is truncated")
    machine = _cstr(raw[12 + 4 * _UTS_LEN : 12 + 5 * _UTS_LEN])
    is32 = bool(_32BIT_MACHINES.match(machine))
    layout = _DH32 if is32 else _DH64
    order = _kdump_byte_order(raw)
    if order is None:
        version = struct.unpack_from("<i", raw, 8)[0]
        raise _bad(path, f"unsupported kdump header_version {version}")
    need = struct.calcsize(order + layout)
    if len(raw) < need:
        raise _bad(path, "kdump header is truncated")
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
        raise _bad(path, "kdump header has no machine name")
    if block_size < 512 or block_size > (1 << 20) or block_size & (block_size - 1):
        raise _bad(path, f"absurd kdump block_size {block_size}")
    if sub_hdr_size < 0 or bitmap_blocks < 0 or bitmap_blocks % 2:
        raise _bad(path, f"absurd kdump sub_hdr_size {sub_hdr_size}, bitmap_blocks {bitmap_blocks}")

    if bitmap_blocks == 0 or max_mapnr == 0:
        raise _bad(path, "kdump header describes no memory (bitmap_blocks or max_mapnr is 0)")

    sub: dict[str, int] = {}
    if sub_hdr_size > 0:
        sub_layout = _SUB32 if is32 else _SUB64
        # Only the fields present in this header_version are trusted.
        nfields = {0: 1, 1: 2, 2: 5, 3: 7, 4: 9, 5: 11}.get(version, len(_SUB_FIELDS))
        full = struct.calcsize(order + sub_layout)
        sub_raw = src.read(block_size, full)
        if len(sub_raw) < struct.calcsize(order + sub_layout[:nfields]):
            raise _bad(path, "kdump sub-header is truncated")
        values = struct.unpack(order + sub_layout, sub_raw.ljust(full, b"\0"))
        sub = dict(zip(_SUB_FIELDS[:nfields], values[:nfields], strict=True))
    if sub.get("max_mapnr_64"):
        max_mapnr = sub["max_mapnr_64"]

    vmcoreinfo_raw = _kdump_vmcoreinfo(path, src, sub, order == ">", file_size)

    dump_level = sub.get("dump_level") if version >= 1 else None
    bitmap_at = block_size * (1 + sub_hdr_size)
    half = bitmap_blocks // 2 * block_size
    if half and half * 8 < max_mapnr:
        raise _bad(path, f"kdump bitmap of {half} bytes cannot cover max_mapnr {max_mapnr}")
    if isinstance(src, _FileSource) and bitmap_at + 2 * half > file_size:
        raise _bad(
            path,
            f"page bitmaps end at byte {bitmap_at + 2 * half} but the file has "
            f"{file_size} bytes (truncated copy?)",
        )
    compared = _compare_bitmaps(src, bitmap_at, half, max_mapnr)
    page_size = block_size
    if compared is not None:
        differ, present_pages = compared
        filtered = differ
        phys: int | None = present_pages * page_size
    else:
        filtered = bool(dump_level)
        phys = max_mapnr * page_size if max_mapnr else None
    return _finish(
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
    )


def _kdump_byte_order(raw: bytes) -> str | None:
    """Pick the header's byte order from a plausible header_version/block_size."""
    for order in ("<", ">"):
        version = struct.unpack_from(order + "i", raw, 8)[0]
        if 0 <= version <= 64:
            return order
    return None


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def _kdump_vmcoreinfo(
    path: str, src: _FileSource | _FlatSource, sub: dict[str, int], big: bool, file_size: int
) -> bytes | None:
    off, size = sub.get("offset_vmcoreinfo", 0), sub.get("size_vmcoreinfo", 0)
    if off and size:
        if size > MAX_VMCOREINFO_BYTES or off < 0:
            raise _bad(path, f"absurd VMCOREINFO size {size} at offset {off}")
        if isinstance(src, _FileSource) and off + size > file_size:
            raise _bad(path, "VMCOREINFO lies past the end of the file (truncated?)")
        data = src.read(off, size)
        if len(data) < size:
            raise _bad(path, "VMCOREINFO is truncated")
        return data
    noff, nsize = sub.get("offset_note", 0), sub.get("size_note", 0)
    if noff and nsize:
        if noff < 0 or nsize > MAX_NOTE_SEGMENT_BYTES:
            raise _bad(path, f"absurd note size {nsize} at offset {noff}")
        return _find_vmcoreinfo_in_notes(src.read, noff, nsize, big)
    return None


def _compare_bitmaps(
    src: _FileSource | _FlatSource, at: int, half: int, max_mapnr: int
) -> tuple[bool, int] | None:
    """
    Compare the two kdump page bitmaps.

    Return (whether they differ, pages present in bitmap 1), or ``None`` when
    they cannot be read within the limits.  Bitmap 1 marks pages that exist,
    bitmap 2 the pages written; they differ exactly when pages were filtered.
    """
    if half <= 0 or half > MAX_BITMAP_BYTES:
        return None
    nbytes = min(half, (max_mapnr + 7) // 8) if max_mapnr else half
    differ = False
    present = 0
    chunk = 1 << 20 if isinstance(src, _FileSource) else half
    for start in range(0, nbytes, chunk):
        n = min(chunk, nbytes - start)
        b1 = src.read(at + start, n)
        if isinstance(src, _FlatSource) and not src.complete:
            return None
        b2 = src.read(at + half + start, n)
        if isinstance(src, _FlatSource) and not src.complete:
            return None
        b1 = b1.ljust(n, b"\0")
        b2 = b2.ljust(n, b"\0")
        differ = differ or b1 != b2
        present += int.from_bytes(b1, "little").bit_count()
    if present == 0:
        return None  # no bitmap at all: fall back to the header's word
    return differ, present


# --------------------------------------------------------------------------
# Common tail
# --------------------------------------------------------------------------


def _finish(
    path: str,
    fmt: str,
    arch: str,
    vmcoreinfo_raw: bytes | None,
    *,
    release: str | None,
    timestamp: int | None,
    block_size: int | None,
    phys_mem_bytes: int | None,
    filtered: bool,
    dump_level: int | None,
) -> _Result:
    vmcoreinfo = parse_vmcoreinfo(vmcoreinfo_raw) if vmcoreinfo_raw else {}
    osrelease = vmcoreinfo.get("OSRELEASE") or release
    build_id = vmcoreinfo.get("BUILD-ID", "").strip().lower() or None
    if build_id is not None and not re.fullmatch(r"[0-9a-f]+", build_id):
        build_id = None
    crash_time = _int(vmcoreinfo.get("CRASHTIME"), 10) or timestamp or None
    page_size = _int(vmcoreinfo.get("PAGESIZE"), 10) or block_size
    info = DumpInfo(
        path=path,
        format=fmt,
        arch=arch,
        osrelease=osrelease,
        build_id=build_id,
        crash_time=crash_time if crash_time and crash_time > 0 else None,
        page_size=page_size,
        kerneloffset=_int(vmcoreinfo.get("KERNELOFFSET"), 16),
        phys_mem_bytes=phys_mem_bytes,
        filtered=filtered,
        dump_level=dump_level,
        vmcoreinfo=vmcoreinfo,
    )
    return info, vmcoreinfo_raw


def _int(value: str | None, base: int) -> int | None:
    if value is None:
        return None
    try:
        return int(value, base)
    except ValueError:
        return None


def check_architecture(info: DumpInfo) -> None:
    """
    Refuse a dump of an architecture dumpminer cannot walk.

    :raises ArchitectureError: unless ``info.arch`` is in
        :data:`SUPPORTED_ARCHES`.
    """
    if info.arch not in SUPPORTED_ARCHES:
        raise ArchitectureError(
            f"{show_path(info.path)} is a {info.arch} dump; dumpminer supports only "
            f"{', '.join(SUPPORTED_ARCHES)}"
        )


def dump_info_dict(info: DumpInfo) -> dict[str, object]:
    """The facts of *info* as plain data, VMCOREINFO last."""
    return {
        "schema": "dumpminer.info/1",
        "path": info.path,
        "format": info.format,
        "arch": info.arch,
        "osrelease": info.osrelease,
        "build_id": info.build_id,
        "crash_time": info.crash_time,
        "page_size": info.page_size,
        "kerneloffset": None if info.kerneloffset is None else f"{info.kerneloffset:#x}",
        "phys_mem_bytes": info.phys_mem_bytes,
        "filtered": info.filtered,
        "dump_level": info.dump_level,
        "vmcoreinfo": dict(info.vmcoreinfo),
    }
