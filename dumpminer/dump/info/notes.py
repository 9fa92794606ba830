"""
ELF notes and the VMCOREINFO note they carry.

Both ELF cores (``PT_NOTE``) and kdump files (the sub-header's note area or
its own VMCOREINFO range) hold VMCOREINFO, the kernel's ``KEY=VALUE`` text
about itself. Its sizes come from the file, so both are capped here before
anything is read.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

__all__ = [
    "MAX_NOTE_SEGMENT_BYTES",
    "MAX_VMCOREINFO_BYTES",
    "find_vmcoreinfo_in_notes",
    "iter_elf_notes",
    "parse_vmcoreinfo",
]

#: Largest VMCOREINFO text accepted (the kernel's own limit is one page).
MAX_VMCOREINFO_BYTES = 1 << 20
#: Most bytes of one note area (PT_NOTE segment, kdump note area) read looking
#: for VMCOREINFO; per-CPU notes of 8192 CPUs take about 3 MiB.
MAX_NOTE_SEGMENT_BYTES = 16 << 20


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


def find_vmcoreinfo_in_notes(
    read: Callable[[int, int], bytes], start: int, length: int, big_endian: bool
) -> bytes | None:
    """Return the VMCOREINFO note's text from the notes in ``[start, start +
    length)``, read in one piece of at most :data:`MAX_NOTE_SEGMENT_BYTES`."""
    data = read(start, min(length, MAX_NOTE_SEGMENT_BYTES))
    for name, _, desc in iter_elf_notes(data, big_endian):
        if name == b"VMCOREINFO":
            return desc if len(desc) <= MAX_VMCOREINFO_BYTES else None
    return None
