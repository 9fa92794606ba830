"""
Slab cache creation flags (``s->flags``), read from the kernel the dump is of.

Linux kernel commit "mm, slab: use an enum to define SLAB_ cache creation
flags" (in v6.9) numbered the flags by ``enum _slab_flag_bits``
(``_SLAB_STORE_USER``, ...), whose values the debuginfo or BTF gives. Before
it they were ``#define``\\ s, which no type shows: their values were stable
from 2.6 on and are kept here. Both ``SlubAllocator`` (full lists kept with
``SLAB_STORE_USER``) and the call-site reader (tracks and ``orig_size``) ask
this one function.
"""

from __future__ import annotations

from drgn import Program

__all__ = ["LEGACY_FLAGS", "slab_flag"]

#: The ``#define`` values before v6.9 (include/linux/slab.h).
LEGACY_FLAGS = {"SLAB_STORE_USER": 0x00010000, "SLAB_KMALLOC": 0x00001000}


def slab_flag(prog: Program, name: str) -> int:
    """The bit of slab flag *name* (``"SLAB_STORE_USER"``) in ``s->flags``."""
    try:
        return 1 << int(prog.constant("_" + name).value_())
    except LookupError:
        return LEGACY_FLAGS[name]
