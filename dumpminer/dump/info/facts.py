"""
The facts a dump's headers give, whatever its format.

:class:`DumpInfo` is what :func:`~dumpminer.dump.info.read_dump_info` returns;
:func:`dump_facts` builds it from what a format reader found, preferring
VMCOREINFO (written by the kernel) over the container's own header (written
by the dumping tool), since only the former is sure to describe the kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dumpminer.dump.info.notes import parse_vmcoreinfo
from dumpminer.errors import ArchitectureError, NotADumpError, show_path

__all__ = [
    "SUPPORTED_ARCHES",
    "DumpInfo",
    "Result",
    "check_architecture",
    "dump_facts",
    "dump_info_dict",
    "not_a_dump",
]

#: Architectures dumpminer can walk (the slab walker assumes x86_64 layouts).
SUPPORTED_ARCHES = ("x86_64",)


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
    :ivar cut_short: Why the file is shorter than its headers say (a copy
        cut short: its memory or page data ends past the end of the file),
        or ``None`` for a whole file (or one whose end is not checked).
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
    cut_short: str | None = None


#: What a format reader returns: the facts and VMCOREINFO's raw bytes.
Result = tuple[DumpInfo, bytes | None]


def not_a_dump(path: str, what: str) -> NotADumpError:
    """The error for a file that is not a vmcore dumpminer reads, saying *what* is wrong."""
    return NotADumpError(f"{show_path(path)} is not a vmcore dumpminer can read: {what}")


def dump_facts(
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
    cut_short: str | None = None,
) -> Result:
    """
    Combine a format reader's findings into a :class:`DumpInfo`.

    VMCOREINFO's ``OSRELEASE``, ``CRASHTIME`` and ``PAGESIZE`` win over the
    container's *release*, *timestamp* and *block_size*; a ``BUILD-ID`` that is
    not hex is dropped rather than trusted.
    """
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
        cut_short=cut_short,
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
        "cut_short": info.cut_short,
        "vmcoreinfo": dict(info.vmcoreinfo),
    }


def cut_short_why(end: int, file_size: int, what: str) -> str | None:
    """
    The one-line reason a dump whose *what* (its memory, its page data)
    runs to byte *end* is cut short in a *file_size*-byte file; None when
    it fits.
    """
    if end <= file_size:
        return None
    share = 100 * file_size / end
    return (
        f"its {what} runs to byte {end} but the file has {file_size} bytes "
        f"({share:.0f}%: a copy cut short)"
    )
