"""
Byte sources a header reader reads through: a plain file, or a flattened
stream reassembled on demand.

The flattened form (``makedumpfile -F``, and what QEMU writes for its
``kdump-zlib/lzo/snappy`` formats) is a 4 KiB header then records ``{be64
offset, be64 size, data}`` ending with offset -1: the kdump file they
describe is never on disk, so :class:`FlatSource` rebuilds the few ranges the
header readers need.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from dumpminer.dump.info.facts import not_a_dump

__all__ = [
    "FLAT_HEADER_SIZE",
    "FLAT_SIGNATURE",
    "MAX_FLAT_RECORDS",
    "FileSource",
    "FlatSource",
    "Source",
]

#: Most records of a flattened stream scanned before giving up on a range.
MAX_FLAT_RECORDS = 1 << 20

FLAT_SIGNATURE = b"makedumpfile"
FLAT_HEADER_SIZE = 4096
_FLAT_END = -1


class FileSource:
    """Random access to a plain file; reads beyond EOF come back short."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        """Return up to *length* bytes at *offset*, fewer at the end of the file."""
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        self._f.seek(offset)
        return self._f.read(min(length, self.size - offset))


class FlatSource:
    """
    Byte ranges of the dump a flattened stream describes.

    Each :meth:`read` scans the records from the start (at most
    :data:`MAX_FLAT_RECORDS` of them) copying whatever overlaps the wanted
    range; bytes no record wrote read as zero, as they would after
    ``makedumpfile -R``.  Headers and bitmaps come first in the stream, so
    these scans stop early.
    """

    def __init__(self, f: BinaryIO, size: int, path: str) -> None:
        self._f = f
        self._file_size = size
        self._path = path
        #: Whether the last read saw every record it needed.
        self.complete = True

    def _records(self) -> Iterator[tuple[int, int, int]]:
        """Yield (dump offset, size, file position of data)."""
        pos = FLAT_HEADER_SIZE
        for _ in range(MAX_FLAT_RECORDS):
            self._f.seek(pos)
            head = self._f.read(16)
            if len(head) < 16:
                return  # stream cut short: treat as its end
            offset, size = struct.unpack(">qq", head)
            if offset == _FLAT_END:
                return
            if offset < 0 or size < 0 or size > self._file_size:
                raise not_a_dump(self._path, f"corrupt flattened record at byte {pos}")
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


#: Either source: what the kdump reader reads through.
Source = FileSource | FlatSource
