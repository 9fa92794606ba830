"""
Finding kallsyms tables by their shape (dumpminer.dump.kallsymsfind), on bytes.

Tables are built here as scripts/kallsyms writes them, in each of the
layouts of the kernel's history: the addresses first (v4.6 to v6.3), with
``kallsyms_seqs_of_names`` between markers and tokens (v6.2, Debian's 6.1),
and the addresses last (v6.4 on); with relative offsets or absolute
addresses. The finder must name every table where it was put. The real
dumps of every series are tests/test_nodebuginfo.py's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from drgn import FaultError

from dumpminer.dump.kallsymsfind import DIGIT_TOKENS, find_kallsyms, kernel_image_bounds

BASE = 0xFFFFFFFF82000000
TEXT = 0xFFFFFFFF81000000
SYMBOLS = 700  # three markers


def _align(data: bytearray, to: int = 8) -> None:
    data.extend(bytes(-len(data) % to))


def _tokens() -> list[bytes]:
    """A token table: every printable character its own token, others two bytes."""
    return [bytes([i]) if 0x20 < i < 0x7F else b"?" + bytes([0x41 + i % 26]) for i in range(256)]


def _build(layout: str, absolute: bool = False, seqs: int = 0) -> tuple[bytes, dict[str, int], int]:
    """
    Tables of SYMBOLS symbols laid out as *layout* ("first": addresses before
    kallsyms_num_syms; "last": after kallsyms_token_index) from BASE, with
    *seqs* bytes per symbol of kallsyms_seqs_of_names after the markers.
    Returns the bytes, where each table starts, and where the search may end.
    """
    tokens = _tokens()
    addresses = [TEXT + 0x40 * i for i in range(SYMBOLS)]
    names = bytearray()
    markers = []
    for i in range(SYMBOLS):
        if i % 256 == 0:
            markers.append(len(names))
        text = b"T" + (b"_stext" if i == 0 else b"sym_%04d_x" % i)
        names += bytes([len(text)]) + text  # each character is its own token
    relative_base = TEXT
    if absolute:
        address_part = b"".join(struct.pack("<Q", a) for a in addresses)
        address_names = {"kallsyms_addresses": 0}
    else:
        address_part = b"".join(struct.pack("<I", a - relative_base) for a in addresses)
        address_names = {"kallsyms_offsets": 0}
    data = bytearray()
    where: dict[str, int] = {}

    def put(name: str, part: bytes) -> None:
        _align(data)
        where[name] = BASE + len(data)
        data.extend(part)

    def put_addresses() -> None:
        (name,) = address_names
        put(name, address_part)
        if not absolute:
            put("kallsyms_relative_base", struct.pack("<Q", relative_base))

    if layout == "first":
        put_addresses()
    put("kallsyms_num_syms", struct.pack("<I", SYMBOLS))
    put("kallsyms_names", bytes(names))
    put("kallsyms_markers", b"".join(struct.pack("<I", m) for m in markers))
    if seqs:
        put("kallsyms_seqs_of_names", b"".join(i.to_bytes(seqs, "big") for i in range(SYMBOLS)))
    table = b"".join(t + b"\0" for t in tokens)
    put("kallsyms_token_table", table)
    index, at = [], 0
    for token in tokens:
        index.append(at)
        at += len(token) + 1
    put("kallsyms_token_index", struct.pack("<256H", *index))
    if layout == "last":
        put_addresses()
    where.pop("kallsyms_seqs_of_names", None)
    end = BASE + len(data)
    data.extend(bytes(4096))
    return bytes(data), where, end


def _reader(
    data: bytes, base: int, holes: tuple[tuple[int, int], ...] = ()
) -> Callable[[int, int], bytes]:
    def read(address: int, size: int) -> bytes:
        if address < base or address + size > base + len(data):
            raise FaultError("outside", address)
        for low, high in holes:
            if address < high and low < address + size:
                raise FaultError("hole", low)
        return data[address - base : address - base + size]

    return read


@pytest.mark.parametrize(
    ("layout", "absolute", "seqs"),
    [
        ("first", False, 0),  # v4.6 to v6.1 (5.10 here)
        ("first", True, 0),  # without CONFIG_KALLSYMS_BASE_RELATIVE
        ("first", False, 4),  # v6.2's kallsyms_seqs_of_names, u32
        ("first", False, 3),  # v6.2's, 3 bytes (Debian's 6.1 here)
        ("last", False, 0),  # v6.4 on (6.12 here)
        ("last", True, 0),
    ],
)
def test_every_layout_is_found(layout: str, absolute: bool, seqs: int) -> None:
    data, where, end = _build(layout, absolute, seqs)
    candidates = list(find_kallsyms(_reader(data, BASE), BASE, end))
    assert where in [c.where for c in candidates]
    assert {c.symbols for c in candidates} == {SYMBOLS}


def test_found_below_holes_and_other_bytes() -> None:
    """Unreadable pages above the tables (freed image pages) and noise around them."""
    data, where, end = _build("first")
    noise = bytes(range(256)) * 64
    image = noise + data + noise
    base = BASE - len(noise)
    hole = (end + 4096, end + 8192)
    read = _reader(image, base, (hole,))
    candidates = list(find_kallsyms(read, base, base + len(image) - 64))
    assert where in [c.where for c in candidates]


def test_no_digit_tokens_nothing_found() -> None:
    data, _, end = _build("first")
    broken = data.replace(DIGIT_TOKENS, DIGIT_TOKENS.replace(b"9", b"Z"))
    assert list(find_kallsyms(_reader(broken, BASE), BASE, end)) == []


def test_a_token_index_that_does_not_fit_is_refused() -> None:
    data, where, end = _build("first")
    at = where["kallsyms_token_index"] - BASE
    broken = data[:at] + struct.pack("<H", 1) + data[at + 2 :]
    assert list(find_kallsyms(_reader(broken, BASE), BASE, end)) == []


def test_names_that_miss_a_marker_are_refused() -> None:
    data, where, end = _build("first")
    at = where["kallsyms_names"] - BASE
    broken = data[:at] + bytes([data[at] + 1]) + data[at + 1 :]  # the first name one longer
    assert list(find_kallsyms(_reader(broken, BASE), BASE, end)) == []


def test_kernel_image_bounds() -> None:
    symbols = {"_stext": TEXT, "init_uts_ns": TEXT + 0x1613700, "swapper_pg_dir": TEXT + 0x160A000,
               "mem_section": 0xFFFF96ADDFF50000}  # fmt: skip
    assert kernel_image_bounds(symbols, 0) == (TEXT, TEXT + 0x160A000)
    # Without _stext: x86_64's __START_KERNEL moved by KERNELOFFSET.
    assert kernel_image_bounds({"init_uts_ns": 0xFFFFFFFF9C013700}, 0x19A00000) == (
        0xFFFFFFFF9AA00000,
        0xFFFFFFFF9C013700,
    )
