"""
Stack depot handles: the stack traces that allocation tracks point to.

With ``CONFIG_STACKDEPOT``, SLUB stores each allocation's stack trace once in
the kernel's stack depot (lib/stackdepot.c) and keeps only a 32-bit handle
in the object's ``struct track``. A handle is a ``union handle_parts``: a
pool index and an offset (in units of ``1 << DEPOT_STACK_ALIGN`` bytes) of a
``struct stack_record`` in that pool, whose ``entries`` are the return
addresses.

drgn's :func:`~drgn.helpers.linux.stackdepot.stack_depot_fetch` does the same
through typed objects, which needs the pool array as a typed variable; a dump
read with BTF and kallsyms only (no vmlinux) has the variable's address but
not its type. So this module reads the pool array by symbol and the record
by the layouts of ``union handle_parts`` and ``struct stack_record``, which
BTF does have. The handle layout changed twice:

- up to 6.2: ``stack_slabs[slabindex]``;
- 6.3 to 6.8: ``stack_pools[pool_index]``;
- 6.9 on: ``stack_pools[pool_index_plus_1 - 1]`` (0 is "no stack").

Decoding is per handle, not per object: a cache of millions of objects has a
few hundred distinct handles.
"""

from __future__ import annotations

from dataclasses import dataclass

from drgn import FaultError, Program, Type, offsetof, sizeof

__all__ = ["StackDepot", "stack_depot"]

#: ``DEPOT_STACK_ALIGN``: record offsets in a handle count 16-byte units
#: (unchanged since the depot came in 4.6).
DEPOT_STACK_ALIGN = 4
#: Most frames believed in one record (the kernel keeps at most 64).
MAX_FRAMES = 256


@dataclass(frozen=True)
class _Field:
    """A bit field of ``union handle_parts``."""

    shift: int
    mask: int

    def of(self, handle: int) -> int:
        return (handle >> self.shift) & self.mask


def _bit_fields(type_: Type) -> dict[str, _Field]:
    """The bit fields of *type_* by name, looking into anonymous members."""
    out: dict[str, _Field] = {}
    for member in type_.members or ():
        if member.name is None:
            inner = _bit_fields(member.type)
            base = member.bit_offset or 0
            out.update({k: _Field(f.shift + base, f.mask) for k, f in inner.items()})
        elif member.bit_field_size:
            out[member.name] = _Field(member.bit_offset or 0, (1 << member.bit_field_size) - 1)
    return out


class StackDepot:
    """Decodes stack depot handles of one program; see the module docstring."""

    def __init__(self, prog: Program) -> None:
        self.prog = prog
        fields = _bit_fields(prog.type("union handle_parts"))
        self.offset = fields["offset"]
        self.plus_one = "pool_index_plus_1" in fields
        if self.plus_one:
            self.pool = fields["pool_index_plus_1"]
        else:
            self.pool = fields.get("pool_index") or fields["slabindex"]
        try:
            self.pools = prog.symbol("stack_pools").address
        except LookupError:
            self.pools = prog.symbol("stack_slabs").address
        record = prog.type("struct stack_record")
        self.size_at = offsetof(record, "size")
        self.size_bytes = sizeof(record.member("size").type)
        self.entries_at = offsetof(record, "entries")
        self._cache: dict[int, tuple[int, ...] | None] = {}

    def fetch(self, handle: int) -> tuple[int, ...] | None:
        """The return addresses of the stack *handle* names, innermost first; None if unknown."""
        if handle in self._cache:
            return self._cache[handle]
        stack = self._fetch(handle)
        self._cache[handle] = stack
        return stack

    def _fetch(self, handle: int) -> tuple[int, ...] | None:
        if not handle:
            return None
        index = self.pool.of(handle) - (1 if self.plus_one else 0)
        if index < 0:
            return None
        prog = self.prog
        try:
            pool = prog.read_u64(self.pools + 8 * index)
            if not pool:
                return None
            record = pool + (self.offset.of(handle) << DEPOT_STACK_ALIGN)
            raw = prog.read(record + self.size_at, self.size_bytes)
            size = int.from_bytes(raw, "little")
            if not 0 < size <= MAX_FRAMES:
                return None
            data = prog.read(record + self.entries_at, 8 * size)
        except FaultError:
            return None
        return tuple(int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data), 8))


def stack_depot(prog: Program) -> StackDepot | None:
    """A :class:`StackDepot` for *prog*, or None when the kernel has no stack depot."""
    try:
        return StackDepot(prog)
    except (LookupError, KeyError, ValueError):
        return None
