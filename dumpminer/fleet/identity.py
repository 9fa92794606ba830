"""
A dump's identity: what names its report in ``--out DIR`` and says whether
that report is current.

A path alone is no identity: kdump copies dumps under new names, an NFS export
is mounted at different places, and a file may be replaced under the same name.
So a dump is named by what its headers say (kernel release, build ID, crash
time, VMCOREINFO) and by its bytes at both ends and its size: a copy keeps its
identity, a dump cut short (a different size and tail) or another boot (another
VMCOREINFO, another KASLR offset) gets its own.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

from dumpminer.dump.info import read_dump_info
from dumpminer.errors import DumpminerError

#: Bytes hashed at each end of the file: the headers (and VMCOREINFO's notes)
#: at the head, the last pages of memory or compressed blocks at the tail.
HEAD_BYTES = 1 << 20
TAIL_BYTES = 64 << 10


@dataclass(frozen=True, slots=True)
class DumpIdentity:
    """Who a dump is, from its headers and its bytes (:func:`identify`)."""

    #: The path as found (absolute).
    path: str
    #: Hex SHA-256 over everything below and the bytes at both ends.
    digest: str
    size: int
    #: ``"elf"``, ``"kdump"``, ``"kdump-flattened"``; None when the headers are unreadable.
    format: str | None
    osrelease: str | None
    build_id: str | None
    #: VMCOREINFO ``CRASHTIME`` or the kdump header's time; None when absent.
    crash_time: int | None

    def report_name(self) -> str:
        """The file name of this dump's report in ``--out DIR``."""
        release = re.sub(r"[^A-Za-z0-9.+_-]", "_", self.osrelease or "unknown")
        build = (self.build_id or "nobuildid")[:8]
        return f"{release}-{build}-{self.digest[:16]}.json"


def _ends_digest(path: str, size: int) -> str:
    """SHA-256 of the file's first :data:`HEAD_BYTES` and last :data:`TAIL_BYTES`."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(HEAD_BYTES))
        if size > HEAD_BYTES:
            f.seek(max(HEAD_BYTES, size - TAIL_BYTES))
            h.update(f.read(TAIL_BYTES))
    return h.hexdigest()


def identify(path: str) -> DumpIdentity:
    """
    The identity of the dump at *path*. A file whose headers cannot be read
    still gets one (from its bytes), so that its failure is listed under a
    stable name. Raises OSError when the file cannot be read at all.
    """
    path = os.path.abspath(path)
    size = os.stat(path).st_size
    try:
        info = read_dump_info(path, truncated_data_ok=True)
    except DumpminerError:
        info = None
    h = hashlib.sha256()
    h.update(b"%d\0" % size)
    h.update(_ends_digest(path, size).encode())
    if info is not None:
        for key, value in sorted(info.vmcoreinfo.items()):
            h.update(f"{key}={value}\n".encode(errors="surrogateescape"))
        h.update(f"{info.format}\0{info.osrelease}\0{info.build_id}\0{info.crash_time}".encode())
    return DumpIdentity(
        path=path,
        digest=h.hexdigest(),
        size=size,
        format=None if info is None else info.format,
        osrelease=None if info is None else info.osrelease,
        build_id=None if info is None else info.build_id,
        crash_time=None if info is None else info.crash_time,
    )
