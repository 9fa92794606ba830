"""
The kernel's own BTF as a drgn type finder: types without a debuginfo package.

Kernels built with ``CONFIG_DEBUG_INFO_BTF`` (every major distribution's since
about 5.4) carry a compact description of their types, BTF, in memory between
``__start_BTF`` and ``__stop_BTF``. Its format is documented in the kernel's
Documentation/bpf/btf.rst: a ``struct btf_header``, then type records (one
``struct btf_type`` each, followed by kind-specific data), then a string table.
Type IDs count the records from 1; ID 0 is ``void``.

:class:`KernelBtf` parses the records' positions and names once (a tenth of a
second for the 95,000 types of a distribution kernel) and turns a record into
a :class:`drgn.Type` only when drgn asks for it. Structure members and function
parameters are lazy (drgn calls back when they are first used), so a pointer
to a structure never pulls in the whole type graph, and self-referencing
types (``struct list_head``) cost nothing. Types are cached by ID, so each
record becomes one drgn type.

BTF describes almost no variables (only per-CPU ones, in the ``.data..percpu``
data section): :mod:`dumpminer.dump.kallsyms` adds the few globals the slab code
needs.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate

from drgn import (
    Language,
    Object,
    Program,
    Qualifiers,
    Type,
    TypeEnumerator,
    TypeKind,
    TypeKindSet,
    TypeMember,
    TypeParameter,
)

__all__ = ["BtfError", "BtfVariable", "KernelBtf"]

BTF_MAGIC = 0xEB9F

# Kinds, from include/uapi/linux/btf.h.
BTF_KIND_INT = 1
BTF_KIND_PTR = 2
BTF_KIND_ARRAY = 3
BTF_KIND_STRUCT = 4
BTF_KIND_UNION = 5
BTF_KIND_ENUM = 6
BTF_KIND_FWD = 7
BTF_KIND_TYPEDEF = 8
BTF_KIND_VOLATILE = 9
BTF_KIND_CONST = 10
BTF_KIND_RESTRICT = 11
BTF_KIND_FUNC = 12
BTF_KIND_FUNC_PROTO = 13
BTF_KIND_VAR = 14
BTF_KIND_DATASEC = 15
BTF_KIND_FLOAT = 16
BTF_KIND_DECL_TAG = 17
BTF_KIND_TYPE_TAG = 18
BTF_KIND_ENUM64 = 19

#: Bytes of kind-specific data after a ``struct btf_type``: (fixed, per vlen item).
_TRAILER = {
    BTF_KIND_INT: (4, 0),
    BTF_KIND_PTR: (0, 0),
    BTF_KIND_ARRAY: (12, 0),
    BTF_KIND_STRUCT: (0, 12),
    BTF_KIND_UNION: (0, 12),
    BTF_KIND_ENUM: (0, 8),
    BTF_KIND_FWD: (0, 0),
    BTF_KIND_TYPEDEF: (0, 0),
    BTF_KIND_VOLATILE: (0, 0),
    BTF_KIND_CONST: (0, 0),
    BTF_KIND_RESTRICT: (0, 0),
    BTF_KIND_FUNC: (0, 0),
    BTF_KIND_FUNC_PROTO: (0, 8),
    BTF_KIND_VAR: (4, 0),
    BTF_KIND_DATASEC: (0, 12),
    BTF_KIND_FLOAT: (0, 0),
    BTF_KIND_DECL_TAG: (4, 0),
    BTF_KIND_TYPE_TAG: (0, 0),
    BTF_KIND_ENUM64: (0, 12),
}

# BTF_KIND_INT encoding bits.
_INT_SIGNED = 1
_INT_BOOL = 4

_QUALIFIER = {
    BTF_KIND_CONST: Qualifiers.CONST,
    BTF_KIND_VOLATILE: Qualifiers.VOLATILE,
    BTF_KIND_RESTRICT: Qualifiers.RESTRICT,
}

#: Named kinds that drgn looks types up by, and the drgn kind each becomes.
_FINDABLE = {
    BTF_KIND_STRUCT: TypeKind.STRUCT,
    BTF_KIND_UNION: TypeKind.UNION,
    BTF_KIND_ENUM: TypeKind.ENUM,
    BTF_KIND_ENUM64: TypeKind.ENUM,
    BTF_KIND_TYPEDEF: TypeKind.TYPEDEF,
    BTF_KIND_FLOAT: TypeKind.FLOAT,
}

#: Integer types named by size and signedness, for enums' compatible types.
_INT_NAMES = {
    (1, False): "unsigned char",
    (1, True): "signed char",
    (2, False): "unsigned short",
    (2, True): "short",
    (4, False): "unsigned int",
    (4, True): "int",
    (8, False): "unsigned long",
    (8, True): "long",
}

_U32 = struct.Struct("<I")
_TYPE = struct.Struct("<III")
_HEADER = struct.Struct("<HBBIIIII")


class BtfError(Exception):
    """The BTF blob is not BTF, or is cut or corrupt."""


@dataclass(frozen=True)
class BtfVariable:
    """A variable BTF describes: its name, type ID and data section offset."""

    name: str
    type_id: int
    section: str
    offset: int


class KernelBtf:
    """
    One kernel's BTF, parsed for lookups by name, building drgn types on
    demand for *prog*.
    """

    def __init__(self, prog: Program, data: bytes) -> None:
        self.prog = prog
        if len(data) < _HEADER.size:
            raise BtfError(f"BTF is {len(data)} bytes, shorter than its header")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(
            data
        )
        if magic != BTF_MAGIC:
            raise BtfError(f"no BTF magic (found {magic:#06x})")
        if version != 1:
            raise BtfError(f"BTF version {version} (only 1 is known)")
        types_start = hdr_len + type_off
        strings_start = hdr_len + str_off
        if (
            hdr_len < _HEADER.size
            or types_start + type_len > len(data)
            or strings_start + str_len > len(data)
        ):
            raise BtfError("BTF header points past the end of the data")
        self._data = data
        self._strings = data[strings_start : strings_start + str_len]
        #: Offset in ``_data`` of each type record; index 0 (void) unused.
        self._offsets: list[int] = [0]
        #: Type IDs by name, for names drgn looks up.
        self._by_name: dict[str, list[int]] = {}
        #: Enumerator name -> (enum type ID, value), built on first use.
        self._enumerators: dict[str, tuple[int, int]] | None = None
        self._functions: dict[str, int] = {}
        self._variables: dict[str, BtfVariable] = {}
        self._types: dict[int, Type] = {}
        self._names: dict[int, bytes] = {}
        #: IDs of the enums, named or not (anonymous ones hold constants too).
        self._enum_ids: list[int] = []
        self._parse(types_start, types_start + type_len)

    # --- parsing -----------------------------------------------------------

    def _string(self, offset: int) -> str:
        try:
            return self._names[offset].decode(errors="replace")
        except KeyError:
            pass
        # An offset into the middle of a string (a shared suffix).
        end = self._strings.find(b"\0", offset)
        if offset >= len(self._strings) or end < 0:
            raise BtfError(f"BTF string offset {offset} is out of range")
        return self._strings[offset:end].decode(errors="replace")

    def _string_table(self) -> dict[int, bytes]:
        """Every string of the string section by its offset (in C loops, not Python's)."""
        strings = self._strings.split(b"\0")
        starts = accumulate(map((1).__add__, map(len, strings)), initial=0)
        return dict(zip(starts, strings, strict=False))

    def _parse(self, pos: int, end: int) -> None:
        """
        Record where each type is and index the named ones. The records are
        walked as 32-bit words (every BTF field is one), which is what makes
        95,000 records a tenth of a second in Python.
        """
        if (end - pos) % 4 or pos % 4:
            raise BtfError("BTF type section is not made of 32-bit words")
        self._names = self._string_table()
        words = memoryview(self._data)[pos:end].cast("I")
        count = len(words)
        offsets = self._offsets
        named: list[tuple[int, int, int]] = []
        # Words per record by kind: (header and fixed part, per vlen item);
        # None for kinds BTF does not define.
        sizes: list[tuple[int, int] | None] = [None] * 32
        for kind, (fixed, each) in _TRAILER.items():
            sizes[kind] = (3 + fixed // 4, each // 4)
        add_offset, add_named, add_enum = offsets.append, named.append, self._enum_ids.append
        i = 0
        while i < count:
            if i + 3 > count:
                raise BtfError(f"BTF type record {len(offsets)} is cut short")
            info = words[i + 1]
            size = sizes[(info >> 24) & 0x1F]
            if size is None:
                kind = (info >> 24) & 0x1F
                raise BtfError(f"BTF type {len(offsets)} has unknown kind {kind}")
            if words[i]:
                add_named((len(offsets), (info >> 24) & 0x1F, words[i]))
            if size[1] and (info >> 24) & 0x1F in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
                add_enum(len(offsets))
            add_offset(pos + 4 * i)
            i += size[0] + size[1] * (info & 0xFFFF)
        if i != count:
            raise BtfError("BTF type records overrun their section")
        by_name = self._by_name
        string = self._string
        for type_id, kind, name_off in named:
            if kind == BTF_KIND_DATASEC:
                self._index_datasec(type_id)
                continue
            name = string(name_off)
            by_name.setdefault(name, []).append(type_id)
            if kind == BTF_KIND_FUNC:
                self._functions.setdefault(name, type_id)

    def _index_datasec(self, type_id: int) -> None:
        """Index the variables of a data section (``.data..percpu``)."""
        pos = self._offsets[type_id]
        name_off, info, _size = _TYPE.unpack_from(self._data, pos)
        section = self._string(name_off)
        for i in range(info & 0xFFFF):
            var_id, offset, _var_size = _TYPE.unpack_from(self._data, pos + 12 + 12 * i)
            if not 0 < var_id < len(self._offsets) or self._kind(var_id) != BTF_KIND_VAR:
                continue
            var_name_off, _info, var_type = _TYPE.unpack_from(self._data, self._offsets[var_id])
            name = self._string(var_name_off)
            self._variables[name] = BtfVariable(name, var_type, section, offset)

    def _record(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(kind, kind_flag, vlen, name offset, size or type) of *type_id*."""
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"BTF type ID {type_id} is out of range")
        name_off, info, size_or_type = _TYPE.unpack_from(self._data, self._offsets[type_id])
        return (info >> 24) & 0x1F, info >> 31, info & 0xFFFF, name_off, size_or_type

    def _kind(self, type_id: int) -> int:
        return int(_U32.unpack_from(self._data, self._offsets[type_id] + 4)[0] >> 24) & 0x1F

    def _items(self, type_id: int, size: int, fmt: struct.Struct) -> Iterator[tuple[int, ...]]:
        """The vlen items after the record of *type_id*, each unpacked with *fmt*."""
        pos = self._offsets[type_id]
        vlen = _U32.unpack_from(self._data, pos + 4)[0] & 0xFFFF
        start = pos + 12 + _TRAILER[self._kind(type_id)][0]
        for i in range(vlen):
            yield fmt.unpack_from(self._data, start + size * i)

    # --- lookups -----------------------------------------------------------

    @property
    def type_count(self) -> int:
        """Types in the BTF, ``void`` not counted."""
        return len(self._offsets) - 1

    def named(self, name: str) -> list[int]:
        """IDs of the types, functions and variables called *name*."""
        return self._by_name.get(name, [])

    def variable(self, name: str) -> BtfVariable | None:
        """The variable (per-CPU, in practice) called *name*, if BTF has it."""
        return self._variables.get(name)

    def function_type(self, name: str) -> Type | None:
        """The function type of the function called *name*, if BTF has it."""
        type_id = self._functions.get(name)
        if type_id is None:
            return None
        return self.type(self._record(type_id)[4])

    def enumerator(self, name: str) -> Object | None:
        """The enumerator called *name*, as a value of its enum type."""
        if self._enumerators is None:
            self._enumerators = self._index_enumerators()
        found = self._enumerators.get(name)
        if found is None:
            return None
        type_id, value = found
        return Object(self.prog, self.type(type_id), value)

    def _index_enumerators(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for type_id in self._enum_ids:
            for name, value in self._enum_values(type_id):
                out.setdefault(name, (type_id, value))
        return out

    def _enum_values(self, type_id: int) -> list[tuple[str, int]]:
        kind, signed, _vlen, _name, _size = self._record(type_id)
        out = []
        if kind == BTF_KIND_ENUM:
            for name_off, raw in self._items(type_id, 8, struct.Struct("<II")):
                value = raw - (1 << 32) if signed and raw >= 1 << 31 else raw
                out.append((self._string(name_off), value))
        else:
            for name_off, lo, hi in self._items(type_id, 12, _TYPE):
                raw = hi << 32 | lo
                value = raw - (1 << 64) if signed and raw >= 1 << 63 else raw
                out.append((self._string(name_off), value))
        return out

    def find_type(self, kinds: TypeKindSet, name: str) -> Type | None:
        """
        The type called *name* of one of *kinds*: a complete definition if
        there is one, else a forward declaration.
        """
        declared = None
        for type_id in self._by_name.get(name, ()):
            kind, kind_flag, _vlen, _name, _size = self._record(type_id)
            if kind == BTF_KIND_INT:
                encoding = _U32.unpack_from(self._data, self._offsets[type_id] + 12)[0] >> 24
                drgn_kind = TypeKind.BOOL if encoding & _INT_BOOL else TypeKind.INT
            elif kind == BTF_KIND_FWD:
                if declared is None and (TypeKind.UNION if kind_flag else TypeKind.STRUCT) in kinds:
                    declared = type_id
                continue
            elif kind in _FINDABLE:
                drgn_kind = _FINDABLE[kind]
            else:
                continue
            if drgn_kind not in kinds:
                continue
            if kind == BTF_KIND_ENUM and self._record(type_id)[2] == 0 and declared is None:
                declared = type_id  # An enum with no values is a declaration.
                continue
            return self.type(type_id)
        return None if declared is None else self.type(declared)

    # --- building drgn types -------------------------------------------------

    def type(self, type_id: int) -> Type:
        """The drgn type of BTF type *type_id* (0 is ``void``)."""
        try:
            return self._types[type_id]
        except KeyError:
            pass
        built = self._build(type_id)
        self._types[type_id] = built
        return built

    def _lazy(self, type_id: int) -> Callable[[], Type]:
        return lambda: self.type(type_id)

    def _build(self, type_id: int) -> Type:
        prog = self.prog
        lang = Language.C
        if type_id == 0:
            return prog.void_type(language=lang)
        kind, kind_flag, vlen, name_off, size_or_type = self._record(type_id)
        name = self._string(name_off) if name_off else None
        if kind == BTF_KIND_INT:
            word = _U32.unpack_from(self._data, self._offsets[type_id] + 12)[0]
            encoding = word >> 24
            assert name is not None
            if encoding & _INT_BOOL:
                return prog.bool_type(name, size_or_type, language=lang)
            return prog.int_type(name, size_or_type, bool(encoding & _INT_SIGNED), language=lang)
        if kind == BTF_KIND_FLOAT:
            assert name is not None
            return prog.float_type(name, size_or_type, language=lang)
        if kind == BTF_KIND_PTR:
            return prog.pointer_type(self.type(size_or_type), language=lang)
        if kind == BTF_KIND_ARRAY:
            elem, _index, nelems = _TYPE.unpack_from(self._data, self._offsets[type_id] + 12)
            # BTF writes a flexible array member (``x[]``) as 0 elements, as
            # it does ``x[0]``: both become ``x[0]``, of the same size (0) and
            # readable, where ``x[]`` would be an incomplete type.
            return prog.array_type(self.type(elem), nelems, language=lang)
        if kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            make = prog.struct_type if kind == BTF_KIND_STRUCT else prog.union_type
            return make(name, size_or_type, self._members(type_id, kind_flag), language=lang)
        if kind == BTF_KIND_FWD:
            if name is not None:
                # The definition may be elsewhere in the BTF: use it.
                kinds = TypeKindSet({TypeKind.UNION if kind_flag else TypeKind.STRUCT})
                for other in self._by_name.get(name, ()):
                    if other != type_id and self._kind(other) != BTF_KIND_FWD:
                        found = self.find_type(kinds, name)
                        if found is not None:
                            return found
                        break
            make = prog.union_type if kind_flag else prog.struct_type
            return make(name, language=lang)
        if kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            if vlen == 0:
                return prog.enum_type(name, language=lang)
            compatible = prog.int_type(
                _INT_NAMES.get((size_or_type, bool(kind_flag)), "int"),
                size_or_type,
                bool(kind_flag),
                language=lang,
            )
            enumerators = [TypeEnumerator(n, v) for n, v in self._enum_values(type_id)]
            return prog.enum_type(name, compatible, enumerators, language=lang)
        if kind == BTF_KIND_TYPEDEF:
            assert name is not None
            return prog.typedef_type(name, self.type(size_or_type), language=lang)
        if kind in _QUALIFIER:
            inner = self.type(size_or_type)
            return inner.qualified(inner.qualifiers | _QUALIFIER[kind])
        if kind in (BTF_KIND_TYPE_TAG, BTF_KIND_VAR):
            return self.type(size_or_type)
        if kind == BTF_KIND_FUNC:
            return self.type(size_or_type)
        if kind == BTF_KIND_FUNC_PROTO:
            params = list(self._items(type_id, 8, struct.Struct("<II")))
            variadic = bool(params) and params[-1] == (0, 0)
            if variadic:
                params.pop()
            return prog.function_type(
                self.type(size_or_type),
                [TypeParameter(self._lazy(t), self._string(n) if n else None) for n, t in params],
                variadic,
                language=lang,
            )
        raise BtfError(f"BTF type {type_id} of kind {kind} is not a type")

    def _members(self, type_id: int, kind_flag: int) -> list[TypeMember]:
        """The members of a struct or union, their types lazy."""
        members = []
        for name_off, member_type, offset in self._items(type_id, 12, _TYPE):
            name = self._string(name_off) if name_off else None
            if kind_flag:
                bit_size, bit_offset = offset >> 24, offset & 0xFFFFFF
            else:
                bit_size, bit_offset = self._old_bitfield(member_type), offset
                if bit_size:
                    bit_offset += self._int_bit_offset(member_type)
            members.append(TypeMember(self._member_thunk(member_type, bit_size), name, bit_offset))
        return members

    def _member_thunk(self, member_type: int, bit_size: int) -> Callable[[], Object | Type]:
        if not bit_size:
            return self._lazy(member_type)
        return lambda: Object(self.prog, self.type(member_type), bit_field_size=bit_size)

    def _old_bitfield(self, type_id: int) -> int:
        """
        Without kind_flag, a bit field is an INT whose bits are fewer than
        its size: return those bits, or 0.
        """
        if type_id == 0 or self._kind(type_id) != BTF_KIND_INT:
            return 0
        size = self._record(type_id)[4]
        bits = _U32.unpack_from(self._data, self._offsets[type_id] + 12)[0] & 0xFF
        return bits if bits != size * 8 else 0

    def _int_bit_offset(self, type_id: int) -> int:
        return int(_U32.unpack_from(self._data, self._offsets[type_id] + 12)[0] >> 16) & 0xFF
