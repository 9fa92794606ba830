"""Independent oracle for the sample vmcores: counts planted records with drgn's own helpers.

Nothing here uses dumpminer: it is what dumpminer's results are checked against. It walks a
slab cache with drgn.helpers.linux.slab, reads every allocated object, recognises
leaky_agent's records by their header (len, type < 0x20, magic at offset 2, a zero u32 at
offset 4) and counts the NUL-terminated string at the manifest's string_offset.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import drgn
from drgn.helpers.linux.slab import find_slab_cache, slab_cache_for_each_allocated_object


def open_prog(vmcore_path: str, vmlinux: str) -> drgn.Program:
    """A drgn Program for a sample dump with its debug vmlinux loaded.

    drgn.host_platform is given explicitly: libkdumpfile cannot tell the architecture of
    QEMU's kdump files ("KDUMP_ATTR_ARCH_NAME: Key has no value") without it.
    """
    prog = drgn.Program(drgn.host_platform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog.set_core_dump(vmcore_path)
    prog.load_debug_info([vmlinux])
    return prog


def count_records(prog: drgn.Program, cache_name: str, family: dict[str, Any]) -> Counter[str]:
    """Per-string counts of the allocated objects of cache_name carrying family's magic."""
    size = family["record_size"]
    offset = family["string_offset"]
    magic = int(family["magic"], 16).to_bytes(2, "little")
    cache = find_slab_cache(prog, cache_name)
    assert cache is not None, f"no slab cache {cache_name}"
    counts: Counter[str] = Counter()
    for obj in slab_cache_for_each_allocated_object(cache, "void"):
        data = prog.read(obj.value_(), size)
        if data[2:4] != magic or data[4:8] != b"\0\0\0\0" or data[1] >= 0x20:
            continue
        text = data[offset:].split(b"\0", 1)[0]
        if len(text) == data[0]:
            counts[text.decode("ascii")] += 1
    return counts
