"""
The slab layouts of kernels no sample here runs, on bytes (dumpminer.slub.walk).

The samples cover 5.10 (slab fields in ``struct page``, hardened freelists
with the byte swap), 6.1 and 6.12. Older kernels differ in ways no Debian
build here shows, each followed from the kernel's history:

- freelist pointers stored plain (no CONFIG_SLAB_FREELIST_HARDENED), as
  ``ptr ^ random ^ &ptr`` (commit 2482ddec670f, v4.14 to v5.6), or as
  ``ptr ^ random ^ swab(&ptr)`` (commit 1ad53d9fa3f6, v5.7 on);
- the slab fields in ``struct page`` at 4.9's places (before commit
  4da1984edbbe, v4.18, reordered the page's unions), at 5.10's, and in
  ``struct slab`` (commit d122019bf061, v5.17);

The page scan is given each ``struct page`` as drgn types built here, so
that the offsets come from the types as they do from a vmlinux or BTF.
"""

from __future__ import annotations

import struct
from typing import Any, cast

import numpy as np
import pytest
from drgn import Architecture as Arch
from drgn import (
    FindObjectFlags,
    Object,
    Platform,
    Program,
    Type,
    TypeKind,
    TypeKindSet,
    TypeMember,
)
from drgn import PlatformFlags as Flags

from dumpminer.slub.walk import (
    CacheLayout,
    Slab,
    WalkStats,
    _FreelistDecoder,
    _PageFields,
    _scan_page_chunk,
)

BASE = 0xFFFF888001234000
STRIDE = 32
OBJECTS = 128
FREEPTR = 16
RANDOM = 0x5A5AC3C3DEADBEEF


def _swab(value: int) -> int:
    return int.from_bytes(value.to_bytes(8, "little"), "big")


def _slab(encoding: str, free: list[int]) -> tuple[Slab, int]:
    """A slab whose objects *free* are chained in that order, stored as *encoding*."""
    data = bytearray(b"\xa5" * STRIDE * OBJECTS)
    for i, index in enumerate(free):
        nxt = BASE + free[i + 1] * STRIDE if i + 1 < len(free) else 0
        where = BASE + index * STRIDE + FREEPTR
        if encoding == "swab":
            nxt ^= RANDOM ^ _swab(where)
        elif encoding == "plain-address":
            nxt ^= RANDOM ^ where
        struct.pack_into("<Q", data, index * STRIDE + FREEPTR, nxt)
    layout = CacheLayout(
        address=0xFFFF888000100000, name="kmalloc-32", object_size=STRIDE, stride=STRIDE,
        red_left_pad=0, freeptr_offset=FREEPTR,
        freelist_random=None if encoding == "none" else RANDOM, cpu_free=(),
        objects_per_slab=OBJECTS,
    )  # fmt: skip
    slab = Slab(
        address=0xFFFFEA0000048D00, layout=layout, base=BASE, objects=OBJECTS,
        allocated=np.ones(OBJECTS, bool), data=bytes(data), before=0, after=0,
    )  # fmt: skip
    return slab, BASE + free[0] * STRIDE


@pytest.mark.parametrize(
    ("encoding", "swab"),
    [("none", None), ("plain-address", False), ("swab", True)],
    ids=["not-hardened", "hardened-v4.14", "hardened-v5.7"],
)
def test_freelist_encodings(encoding: str, swab: bool | None) -> None:
    free = [5, 77, 3, 127, 0, 64, 9]
    slab, head = _slab(encoding, free)
    decoder = _FreelistDecoder()
    assert decoder.free_indices(slab, head) == set(free)
    assert decoder.swab is swab
    # The decision holds for the next slab of the walk.
    other, head = _slab(encoding, [1, 2, 100])
    assert decoder.free_indices(other, head) == {1, 2, 100}


@pytest.mark.parametrize("encoding", ["plain-address", "swab"])
def test_freelist_decoded_the_other_way_is_corrupt(encoding: str) -> None:
    """Once the first slab decided, a slab stored the other way leaves the slab: corrupt."""
    slab, head = _slab(encoding, [5, 77, 3])
    decoder = _FreelistDecoder()
    assert decoder.free_indices(slab, head) == {5, 77, 3}
    other, head = _slab("swab" if encoding == "plain-address" else "plain-address", [8, 90])
    assert decoder.free_indices(other, head) is None


# --- struct page layouts ---------------------------------------------------------------


def _program(page_members: list[tuple[str, int, int, int]], slab_type: bool) -> Program:
    """
    A program whose ``struct page`` (or ``struct slab``, with *slab_type*) has
    the members ``(name, byte offset, bit offset in the word, bits)``, a
    64-byte page, ``PG_slab`` 9 and a VMCOREINFO without a slab page type.
    """
    prog = Program(Platform(Arch.X86_64, Flags.IS_64_BIT | Flags.IS_LITTLE_ENDIAN))
    u64 = prog.int_type("unsigned long", 8, False)
    u32 = prog.int_type("unsigned int", 4, False)
    void_p = prog.pointer_type(prog.void_type())
    members = []
    for name, offset, bit, bits in page_members:
        if bits:
            field = Object(prog, u32, bit_field_size=bits)
            members.append(TypeMember(field, name, offset * 8 + bit))
        else:
            members.append(TypeMember(u64 if name == "flags" else void_p, name, offset * 8))
    page = prog.struct_type("page", 64, [TypeMember(u64, "flags", 0)] if slab_type else members)
    slab = prog.struct_type("slab", 64, members) if slab_type else None
    types = {"page": page, "slab": slab}

    def find_type(
        prog: Program, kinds: TypeKindSet, name: str, filename: str | None
    ) -> Type | None:
        if TypeKind.STRUCT in kinds and name.removeprefix("struct ") in types:
            return types[name.removeprefix("struct ")]
        return None

    text = b"OSRELEASE=4.9.0\nPAGESIZE=4096\n\0"
    char = prog.int_type("char", 1, True)

    def find_object(
        prog: Program, name: str, flags: FindObjectFlags, filename: str | None
    ) -> Object | None:
        if name == "VMCOREINFO":
            return Object(prog, prog.array_type(char, len(text)), value=list(text))
        if name == "PG_slab":
            return Object(prog, "int", value=9)
        return None

    prog.register_type_finder("layouts", find_type, enable_index=0)
    prog.register_object_finder("layouts", find_object, enable_index=0)
    return prog


#: (member, byte offset, bit offset, bits) of the slab fields by kernel.
LAYOUTS = {
    # 4.9: freelist in the second word, counters (inuse:16 objects:15 frozen:1)
    # in the third, slab_cache after lru.
    "v4.9": ([("flags", 0, 0, 0), ("freelist", 16, 0, 0), ("inuse", 24, 0, 16),
              ("objects", 24, 16, 15), ("slab_cache", 48, 0, 0)], False),
    # 4.18 to 5.16: slab_list, then slab_cache, freelist and the counters.
    "v5.10": ([("flags", 0, 0, 0), ("slab_cache", 24, 0, 0), ("freelist", 32, 0, 0),
               ("inuse", 40, 0, 16), ("objects", 40, 16, 15)], False),
    # 5.17 on: the same fields in struct slab, over the page.
    "v6.1": ([("flags", 0, 0, 0), ("slab_cache", 8, 0, 0), ("freelist", 32, 0, 0),
              ("inuse", 40, 0, 16), ("objects", 40, 16, 15)], True),
}  # fmt: skip


@pytest.mark.parametrize("kernel", sorted(LAYOUTS))
def test_page_scan_reads_each_layout(kernel: str) -> None:
    members, slab_type = LAYOUTS[kernel]
    prog = _program(members, slab_type)
    fields = _PageFields(prog)
    offsets = {name: offset for name, offset, _, _ in members}
    cache, other = 0xFFFF888000100000, 0xFFFF888000200000
    pages = bytearray(64 * 8)

    def put(pfn: int, flags: int, slab_cache: int, freelist: int, objects: int) -> None:
        struct.pack_into("<Q", pages, 64 * pfn, flags)
        struct.pack_into("<Q", pages, 64 * pfn + offsets["slab_cache"], slab_cache)
        struct.pack_into("<Q", pages, 64 * pfn + offsets["freelist"], freelist)
        struct.pack_into("<I", pages, 64 * pfn + offsets["objects"], 7 | objects << 16)

    put(1, 1 << 9, cache, 0xFFFF888001234040, 128)  # a slab of the cache
    put(2, 0, cache, 0, 128)  # not a slab page (PG_slab clear), a stale word
    put(4, 1 << 9 | 1, other, 0, 64)  # a slab of another cache
    put(6, 1 << 9, cache, 0, 21)  # a full slab of the cache
    wanted = np.array([cache], np.uint64)
    page0 = 0xFFFFEA0000000000
    found = _scan_page_chunk(
        cast(Any, None), fields, page0, 0, 8, wanted, WalkStats(), bytes(pages)
    )
    assert list(found) == [
        (page0 + 64, 1, cache, 0xFFFF888001234040, 128),
        (page0 + 6 * 64, 6, cache, 0, 21),
    ]
