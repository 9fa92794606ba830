"""
Finding the kallsyms tables in a kernel image that VMCOREINFO does not point to.

Before Linux 6.0 (commit 5fd8fea935a1 ("vmcoreinfo: include kallsyms
symbols") and f09bddbd8661 ("vmcoreinfo: add kallsyms_num_syms symbol")),
VMCOREINFO names no kallsyms table. The tables are still in the dump: in the
kernel's read-only data, written by ``scripts/kallsyms`` in one order, each
label aligned to 8 bytes, from commit 2213e9a66bb8 ("kallsyms: add support
for relative offsets in kallsyms address table") (in v4.6) until commit
404bad70fcf7 ("scripts/kallsyms: change the output order") (in v6.4)::

    kallsyms_offsets        u32 per symbol (kallsyms_addresses, u64, without
    kallsyms_relative_base  u64             CONFIG_KALLSYMS_BASE_RELATIVE)
    kallsyms_num_syms       u32
    kallsyms_names          per symbol: a length byte, then that many token numbers
    kallsyms_markers        u32 per 256 names: where each 256th name starts
    kallsyms_token_table    256 NUL-terminated tokens
    kallsyms_token_index    u16 per token: where it starts in the token table

Since that commit the addresses come last instead of first (``kallsyms_num_syms``,
names, markers, token table, token index, then the offsets and the relative base),
and commit 60443c88f3a8 ("kallsyms: Improve the performance of
kallsyms_lookup_name()") (in v6.2, and in Debian's 6.1) puts
``kallsyms_seqs_of_names`` between the markers and the token table. Those
kernels' VMCOREINFO names the tables already, but a dump whose VMCOREINFO
lost them is read the same way: every place is tried.

They are found by their shape, from the end:

1. The token table holds each character that occurs in a symbol name as a
   token of its own, at its own number (``insert_real_symbols_in_table``):
   the ten digits are ``"0\\0" "1\\0" ... "9\\0"``, at tokens 0x30 to 0x39.
   The search for that run goes down from the kernel's data (the lowest
   VMCOREINFO symbol above ``_stext``, ``swapper_pg_dir`` or
   ``init_uts_ns``) to ``_stext``.
2. The token index follows the table: 256 ascending u16 whose differences
   are the tokens' lengths plus one, and whose entry 0x30 places the table.
3. The markers lie below the table (right below it, or below
   ``kallsyms_seqs_of_names``): u32 that rise from ``markers[0] == 0`` by
   what 256 names can take (2 to 514 bytes each).
4. The names end where the markers start, and ``kallsyms_num_syms`` sits
   just before them: the one place where walking the names from every
   marker lands on the next marker, and the last name ends at the markers.
5. Before ``kallsyms_num_syms`` (or after the token index, since v6.4):
   ``kallsyms_relative_base`` and the offsets (or the absolute addresses),
   told apart by decoding every way; the caller
   keeps the way whose ``_stext`` and ``init_uts_ns`` are where VMCOREINFO
   says (:func:`dumpminer.dump.kallsyms.load_kallsyms`).

Everything here reads bytes through a ``read(address, size)`` callable, so
tests run it on tables built in memory as well as on real dumps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from drgn import FaultError

__all__ = ["DIGIT_TOKENS", "KallsymsCandidate", "find_kallsyms", "kernel_image_bounds"]

#: kallsyms_markers holds the offset in kallsyms_names of every this-many-th name.
NAMES_PER_MARKER = 256

#: Tokens 0x30 to 0x39 of every kallsyms token table: the digits, each alone.
DIGIT_TOKENS = b"".join(bytes([c, 0]) for c in b"0123456789")
#: Bytes read at once while searching the image for :data:`DIGIT_TOKENS`.
SEARCH_CHUNK = 1 << 20
#: Bytes read at once where a chunk faults (the pages the kernel frees
#: between its text and its read-only data).
SEARCH_RETRY_CHUNK = 4096
#: How far below the token table the markers may start: past
#: ``kallsyms_seqs_of_names`` (3 or 4 bytes a symbol).
MARKERS_WINDOW = 4 << 20
#: The longest name kallsyms stores, in bytes after its length (KSYM_NAME_LEN
#: was 128 until 6.1 made it 512).
MAX_NAME_BYTES = 512
#: x86_64's ``__START_KERNEL``: ``_stext`` before KASLR moves it.
X86_64_START_KERNEL = 0xFFFFFFFF81000000
#: How far above ``_stext`` a kernel image's data may lie.
MAX_IMAGE = 1 << 30
#: When VMCOREINFO names no data symbol: how much above ``_stext`` to search.
DEFAULT_SEARCH = 64 << 20

#: ``read(address, size)``: bytes of the kernel's memory, or :class:`~drgn.FaultError`.
Read = Callable[[int, int], bytes]


class KallsymsCandidate(NamedTuple):
    """One way to read tables of the kallsyms shape: where each is, as VMCOREINFO
    would name them (``kallsyms_names``, ...), and how many symbols they hold."""

    where: dict[str, int]
    symbols: int


#: VMCOREINFO symbols in the kernel's data (.data, .bss), which the linker
#: puts after its read-only data.
DATA_ANCHORS = ("swapper_pg_dir", "init_top_pgt", "init_uts_ns", "node_online_map")


def kernel_image_bounds(symbols: dict[str, int], kernel_offset: int | None) -> tuple[int, int]:
    """
    ``(start, end)`` of the search for kallsyms: from ``_stext`` (VMCOREINFO's
    ``SYMBOL(_stext)``, else x86_64's ``__START_KERNEL`` moved by
    ``KERNELOFFSET``) to the lowest of the :data:`DATA_ANCHORS` that
    VMCOREINFO names (the kernel's data, which follows its read-only data).
    """
    stext = symbols.get("_stext")
    if stext is None:
        stext = X86_64_START_KERNEL + (kernel_offset or 0)
    above = [
        symbols[name] for name in DATA_ANCHORS
        if name in symbols and stext < symbols[name] < stext + MAX_IMAGE
    ]  # fmt: skip
    return stext, min(above, default=stext + DEFAULT_SEARCH)


def find_kallsyms(
    read: Read, start: int, end: int, long_names: bool = False
) -> Iterator[KallsymsCandidate]:
    """
    Every place in ``[start, end)`` that has the shape of the kallsyms tables,
    from the top down, each with the ways its addresses may be encoded. The
    caller keeps the first that decodes to the symbols VMCOREINFO names.
    *long_names*: name lengths may take two bytes (Linux 6.1 on).
    """
    for hit in _digit_runs(read, start, end):
        tokens = _token_tables(read, hit)
        if tokens is None:
            continue
        table, index = tokens
        for markers_at, values in _markers(read, table, start):
            names = _names(read, markers_at, values, long_names, start)
            if names is None:
                continue
            names_at, num_syms_at, count = names
            yield from _address_tables(names_at, num_syms_at, count, markers_at, table, index)
            break


def _digit_runs(read: Read, start: int, end: int) -> Iterator[int]:
    """Addresses of :data:`DIGIT_TOKENS` in ``[start, end)``, highest first."""
    top = end
    while top > start:
        low = max(start, top - SEARCH_CHUNK)
        for piece_low, data in _read_down(read, low, top + len(DIGIT_TOKENS) - 1):
            at = len(data)
            while True:
                at = data.rfind(DIGIT_TOKENS, 0, at + len(DIGIT_TOKENS) - 1)
                if at < 0:
                    break
                yield piece_low + at
        top = low


def _read_down(read: Read, low: int, high: int) -> Iterator[tuple[int, bytes]]:
    """
    ``[low, high)`` in one read, or where that faults in readable pieces, top
    first, each overlapping the one above by a digit run's length but one.
    """
    try:
        yield low, read(low, high - low)
        return
    except FaultError:
        pass
    top = high
    while top > low:
        piece = max(low, top - SEARCH_RETRY_CHUNK)
        try:
            data = read(piece, min(high, top + len(DIGIT_TOKENS) - 1) - piece)
        except FaultError:
            data = None  # a hole: the next piece down
        if data is not None:
            yield piece, data
        top = piece


def _token_tables(read: Read, digits: int) -> tuple[int, int] | None:
    """
    ``(kallsyms_token_table, kallsyms_token_index)`` around a run of digit
    tokens at *digits*, or None if no token index follows that places it.
    """
    end = _tokens_end(read, digits)
    if end is None:
        return None
    table_end = digits + end
    for index_at in range(table_end + (table_end & 1), table_end + 8, 2):
        try:
            index = np.frombuffer(read(index_at, 512), "<u2").astype(np.int64)
        except FaultError:
            return None
        if index[0] != 0 or np.any(np.diff(index) <= 1):
            continue
        table = digits - int(index[0x30])
        if table < digits and _index_fits(read, table, table_end, index):
            return table, index_at
    return None


def _tokens_end(read: Read, digits: int) -> int | None:
    """Bytes from *digits* to the end of token 0xff (tokens 0x30 to 0xff), or None."""
    for size in (4096, 64 << 10):
        try:
            after = read(digits, size)
        except FaultError:
            continue
        end = 0
        for _ in range(0x30, 0x100):
            nul = after.find(b"\0", end)
            if nul == end:
                return None  # an empty token: not a token table
            if nul < 0:
                break
            end = nul + 1
        else:
            return end
    return None


def _index_fits(read: Read, table: int, table_end: int, index: npt.NDArray[np.int64]) -> bool:
    """Whether *index* gives exactly where each token of ``[table, table_end)`` starts."""
    try:
        data = read(table, table_end - table)
    except FaultError:
        return False
    ends = [i for i, byte in enumerate(data) if byte == 0]
    starts = [0, *(e + 1 for e in ends[:-1])]
    return len(ends) == 256 and ends[-1] == len(data) - 1 and starts == index.tolist()


def _markers(read: Read, table: int, floor: int) -> Iterator[tuple[int, list[int]]]:
    """
    ``(kallsyms_markers, its values)`` of each run of u32 below the token
    table that rises from 0 in steps that 256 names can take, nearest first.
    """
    below = _read_below(read, table, min(table - floor, MARKERS_WINDOW) & ~3)
    span = len(below) & ~3
    words = np.frombuffer(below[len(below) - span :], "<u4").astype(np.int64)
    steps = np.diff(words)
    rises = (steps >= NAMES_PER_MARKER * 2) & (steps <= NAMES_PER_MARKER * (MAX_NAME_BYTES + 2))
    # Runs of rises that start at a zero word: [first, last] are the markers.
    edges = np.diff(np.concatenate(([0], rises.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for first, last in sorted(zip(starts.tolist(), ends.tolist(), strict=True), reverse=True):
        if words[first] == 0:
            yield table - span + 4 * first, words[first : last + 1].tolist()


def _read_below(read: Read, top: int, size: int) -> bytes:
    """
    The readable bytes right below *top*, at most *size*: one read, or where
    that faults, pieces read downwards until the first that faults (the
    pages freed between the kernel's text and read-only data: a filtered
    dump leaves them out).
    """
    try:
        return read(top - size, size)
    except FaultError:
        pass
    pieces: list[bytes] = []
    at = top
    while at > top - size:
        piece = max(top - size, at - SEARCH_RETRY_CHUNK)
        try:
            pieces.append(read(piece, at - piece))
        except FaultError:
            break
        at = piece
    return b"".join(reversed(pieces))


def _names(
    read: Read, markers_at: int, markers: list[int], long_names: bool, floor: int
) -> tuple[int, int, int] | None:
    """
    ``(kallsyms_names, kallsyms_num_syms, symbols)``: the names that end where
    the markers start, whose every 256th name starts at its marker, preceded
    by their count.
    """
    last = markers[-1]
    most = last + NAMES_PER_MARKER * (MAX_NAME_BYTES + 2) + 16
    data = _read_below(read, markers_at, markers_at - max(floor, markers_at - most))
    low = markers_at - len(data)
    groups = len(markers)
    # names_at + last < markers_at: candidates from the highest down.
    for names_at in range(markers_at - last - 1, low + 3, -1):
        for num_syms_at in (names_at - 8, names_at - 4):
            if num_syms_at < low:
                continue
            count = int.from_bytes(data[num_syms_at - low : num_syms_at - low + 4], "little")
            if count == 0 or (count + NAMES_PER_MARKER - 1) // NAMES_PER_MARKER != groups:
                continue
            names = data[names_at - low :]
            tail = count - (groups - 1) * NAMES_PER_MARKER
            end = _walk_names(names, last, tail, long_names)
            if end is None or not 0 <= len(names) - end < 8:
                continue
            if all(
                _walk_names(names, markers[k], NAMES_PER_MARKER, long_names) == markers[k + 1]
                for k in range(groups - 1)
            ):
                return names_at, num_syms_at, count
    return None


def _walk_names(names: bytes, at: int, count: int, long_names: bool) -> int | None:
    """Where *count* names starting at offset *at* of *names* end, or None past the end."""
    size = len(names)
    for _ in range(count):
        if at >= size:
            return None
        length = names[at]
        at += 1
        if length & 0x80 and long_names:
            if at >= size:
                return None
            length = (length & 0x7F) | names[at] << 7
            at += 1
        if length == 0:
            return None
        at += length
    return at if at <= size else None


def _address_tables(
    names_at: int, num_syms_at: int, count: int, markers_at: int, table: int, index: int
) -> Iterator[KallsymsCandidate]:
    """
    The ways the addresses may sit before ``kallsyms_num_syms`` (up to 6.3)
    or after ``kallsyms_token_index`` (6.4 on): offsets and a relative base
    (CONFIG_KALLSYMS_BASE_RELATIVE, every x86_64 kernel from 4.6 on), the
    offsets' start at either 8-byte alignment before the base; or absolute
    addresses (the labels are 8-byte aligned).
    """
    common = {
        "kallsyms_names": names_at,
        "kallsyms_num_syms": num_syms_at,
        "kallsyms_markers": markers_at,
        "kallsyms_token_table": table,
        "kallsyms_token_index": index,
    }
    relative_base = (num_syms_at - 8) & ~7
    for offsets in sorted({(relative_base - 4 * count) & ~7, relative_base - 4 * count}):
        yield KallsymsCandidate(
            {**common, "kallsyms_offsets": offsets, "kallsyms_relative_base": relative_base},
            count,
        )
    yield KallsymsCandidate({**common, "kallsyms_addresses": (num_syms_at & ~7) - 8 * count}, count)
    after = (index + 512 + 7) & ~7  # commit 404bad70fcf7, in v6.4
    yield KallsymsCandidate(
        {**common, "kallsyms_offsets": after,
         "kallsyms_relative_base": (after + 4 * count + 7) & ~7},
        count,
    )  # fmt: skip
    yield KallsymsCandidate({**common, "kallsyms_addresses": after}, count)
