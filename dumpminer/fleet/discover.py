"""
Finding the dumps of a fleet: paths given one by one, folders searched
recursively, text files that list dumps.

Dumps are recognised by their first bytes (an ELF core, a kdump-compressed
file, a flattened kdump stream), never by their names: kdump's ``vmcore``,
``dump.202401011200``, ``vmcore.flat`` and a support ticket's
``case-1234.bin`` are all found, a log file beside them is not. A path named
explicitly is always taken, dump or not, so that a file that is not one is
reported as failed instead of silently left out.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

from dumpminer.dump.info.elf import ELF_MAGIC
from dumpminer.dump.info.kdump import DISKDUMP_SIGNATURE, KDUMP_SIGNATURE
from dumpminer.dump.info.sources import FLAT_SIGNATURE
from dumpminer.errors import InputFileError, show_path

#: ELF ``e_type`` of a core file.
_ET_CORE = 4
#: Longest listing file read (a list of paths, one a line).
_MAX_LIST_BYTES = 16 << 20


def looks_like_dump(head: bytes) -> bool:
    """Whether *head*, a file's first bytes, starts like a vmcore dumpminer reads."""
    if head.startswith(ELF_MAGIC) and len(head) >= 18:
        byteorder = "<" if head[5:6] == b"\x01" else ">"
        return bool(struct.unpack_from(byteorder + "H", head, 16)[0] == _ET_CORE)
    return head.startswith((KDUMP_SIGNATURE, DISKDUMP_SIGNATURE, FLAT_SIGNATURE))


def _head(path: str) -> bytes:
    """The first bytes of *path* (empty when unreadable: the mining says why)."""
    try:
        with open(path, "rb") as f:
            return f.read(64)
    except OSError:
        return b""


def _is_listing(path: str, head: bytes) -> bool:
    """Whether *path* is a text file that lists paths (not a dump, printable, small)."""
    if looks_like_dump(head) or not head:
        return False
    try:
        if os.path.getsize(path) > _MAX_LIST_BYTES:
            return False
    except OSError:
        return False
    return all(b in b"\t\n\r" or 0x20 <= b < 0x7F or b >= 0x80 for b in head)


def _listed(path: str) -> list[str]:
    """
    The paths a listing file names, one a line (``#`` comments and blank lines
    skipped), relative ones taken from the listing's folder; None-like (empty)
    when a line names no existing file, which means *path* is no listing.
    """
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = [line.strip() for line in f]
    except OSError as e:
        raise InputFileError(f"cannot read {show_path(path)}: {e.strerror}") from e
    base = os.path.dirname(os.path.abspath(path))
    named = [os.path.join(base, line) for line in lines if line and not line.startswith("#")]
    if not named or not all(os.path.exists(p) for p in named):
        return []
    return named


def _walk(folder: str) -> Iterator[str]:
    """Every dump under *folder*, subfolders included, in name order."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if os.path.isfile(path) and looks_like_dump(_head(path)):
                yield path


def find_dumps(paths: list[str]) -> list[str]:
    """
    The dumps *paths* name, as absolute paths, each once, in the order given:
    a folder's dumps (by header), a listing's entries, and any other path as
    it is (a missing file or a non-dump is mined and fails there, listed).
    """
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            found.extend(_walk(path))
            continue
        head = _head(path)
        listed = _listed(path) if _is_listing(path, head) else []
        if listed:
            for entry in listed:
                found.extend(_walk(entry) if os.path.isdir(entry) else [entry])
        else:
            found.append(path)
    seen: set[str] = set()
    unique = []
    for path in map(os.path.abspath, found):
        if path not in seen:
            seen.add(path)
            unique.append(path)
    return unique
