"""
What a dump is, read from its headers alone (no debuginfo needed).

:func:`read_dump_info` identifies the three containers dumpminer accepts —
ELF cores (``/proc/vmcore`` copies, ``makedumpfile -E``, QEMU
``dump-guest-memory``; :mod:`~dumpminer.dump.info.elf`), kdump-compressed
files (``makedumpfile -c/-l/-p``, QEMU >= 8.2 ``kdump-raw-*`` formats;
:mod:`~dumpminer.dump.info.kdump`) and the *flattened* kdump stream
(``makedumpfile -F``, and what QEMU writes for ``kdump-zlib/lzo/snappy``;
:mod:`~dumpminer.dump.info.sources`) — and reports the facts needed to pick a
vmlinux and to judge the dump: kernel release, build ID, page size, how much
memory it covers and whether pages were filtered out
(:mod:`~dumpminer.dump.info.facts`). VMCOREINFO and ELF notes are parsed in
:mod:`~dumpminer.dump.info.notes`.

Every size read from a header is checked against the file size and capped
before anything is allocated, so a corrupt or hostile file is refused with a
:class:`~dumpminer.errors.NotADumpError` in bounded time and memory.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO

from dumpminer.dump.info.elf import ELF_MAGIC, read_elf
from dumpminer.dump.info.facts import (
    SUPPORTED_ARCHES,
    DumpInfo,
    Result,
    check_architecture,
    dump_info_dict,
    not_a_dump,
)
from dumpminer.dump.info.kdump import DISKDUMP_SIGNATURE, KDUMP_SIGNATURE, read_kdump
from dumpminer.dump.info.notes import iter_elf_notes, parse_vmcoreinfo
from dumpminer.dump.info.sources import FLAT_HEADER_SIZE, FLAT_SIGNATURE, FileSource, FlatSource
from dumpminer.errors import InputFileError, show_path

__all__ = [
    "SUPPORTED_ARCHES",
    "DumpInfo",
    "check_architecture",
    "dump_info_dict",
    "iter_elf_notes",
    "parse_vmcoreinfo",
    "read_dump_info",
    "read_vmcoreinfo_text",
]

_COMPRESSED_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\x04\x22\x4d\x18", "lz4"),
)


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


def _read(path: str | os.PathLike[str], truncated_data_ok: bool = False) -> Result:
    """Open *path* and read it with the reader its signature names."""
    spath = os.fsdecode(path)
    try:
        f = open(spath, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise InputFileError(f"cannot read VMCORE {show_path(spath)}: {e.strerror or e}") from e
    try:
        with f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(FLAT_HEADER_SIZE)
            return _identify(spath, f, size, head, truncated_data_ok)
    except OSError as e:
        raise InputFileError(f"cannot read VMCORE {show_path(spath)}: {e.strerror or e}") from e
    except (struct.error, ValueError, OverflowError, IndexError, MemoryError) as e:
        raise not_a_dump(spath, f"corrupt header ({type(e).__name__})") from e


def _identify(
    path: str, f: BinaryIO, size: int, head: bytes, truncated_data_ok: bool = False
) -> Result:
    """Dispatch on the first bytes; name what a non-dump looks like instead."""
    if not head:
        raise not_a_dump(path, "the file is empty")
    if head.startswith(ELF_MAGIC):
        return read_elf(path, f, size, truncated_data_ok)
    if head.startswith(KDUMP_SIGNATURE):
        return read_kdump(path, FileSource(f, size), "kdump", size)
    if head.startswith(FLAT_SIGNATURE):
        return _read_flattened(path, f, size, head)
    if head.startswith(DISKDUMP_SIGNATURE):
        raise not_a_dump(path, "old diskdump format (DISKDUMP) is not supported")
    for magic, name in _COMPRESSED_MAGICS:
        if head.startswith(magic):
            raise not_a_dump(path, f"it is {name}-compressed; decompress it first")
    raise not_a_dump(
        path, f"unknown signature 0x{head[:8].hex()} (expected ELF, KDUMP or makedumpfile)"
    )


def _read_flattened(path: str, f: BinaryIO, size: int, head: bytes) -> Result:
    """Check the flattened header, then read the kdump file its records hold."""
    if len(head) < FLAT_HEADER_SIZE:
        raise not_a_dump(path, "flattened header is truncated")
    sig = head[:16].rstrip(b"\0")
    ftype, fversion = struct.unpack_from(">qq", head, 16)
    if sig != FLAT_SIGNATURE or ftype != 1:
        raise not_a_dump(path, f"unknown makedumpfile flattened type {ftype}")
    if fversion < 1:
        raise not_a_dump(path, f"unknown makedumpfile flattened version {fversion}")
    src = FlatSource(f, size, path)
    inner = src.read(0, 8)
    if inner.startswith(ELF_MAGIC[:4]):
        raise not_a_dump(
            path,
            "it is a flattened ELF dump; reassemble it with 'makedumpfile -R OUT < FILE'",
        )
    if inner != KDUMP_SIGNATURE:
        raise not_a_dump(path, "flattened stream does not hold a kdump header")
    return read_kdump(path, src, "kdump-flattened", size)
