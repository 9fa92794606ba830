"""
dumpminer.dump.btf and dumpminer.dump.kallsyms: the kernel's own BTF and kallsyms
against DWARF, on the real sample dumps of both series.

The DWARF side is drgn with the sample's vmlinux (tests/oracle.py, which uses
nothing from dumpminer); the BTF side is dumpminer's ``open_dump`` with
``use_vmlinux=False``. Every type the slab walk and drgn's slab helpers read
must have DWARF's size and every member DWARF's offset, bit field size, name
and kind; every global, enumerator and function they look up must have
DWARF's address, type and value. A small hand-made BTF blob covers the
encodings the kernel's BTF may not exercise.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any

import drgn
import pytest
from drgn import FindObjectFlags, Program, Type, TypeKind, TypeKindSet
from oracle import open_prog

from dumpminer.dump.btf import BtfError, KernelBtf
from dumpminer.dump.kallsyms import KERNEL_GLOBALS, vmcoreinfo_symbols
from dumpminer.dump.open import FROM_BTF, Dump, open_dump

#: Every struct the walk (walk.py), the cache listing (caches.py, slabinfo.py)
#: and drgn's slab, mm, per-CPU and module helpers read.
SLAB_TYPES = [
    "struct kmem_cache",
    "struct kmem_cache_cpu",
    "struct kmem_cache_node",
    "struct kmem_cache_order_objects",
    "struct slab",
    "struct page",
    "struct list_head",
    "struct mem_section",
    "struct cpumask",
    "struct kset",
    "struct kobject",
    "struct kernfs_node",
    "struct module",
    "struct mod_kallsyms",
    "struct uts_namespace",
    "struct pglist_data",
    "struct zone",
    "struct track",
    "atomic_long_t",
    "nodemask_t",
    "Elf64_Sym",
    "freelist_aba_t",
]


def _kdump(manifest: dict[str, Any]) -> str:
    return str(next(d for d in manifest["dumps"] if d["format"] == "kdump")["path"])


@cache
def _dwarf(vmcore: str, vmlinux: str) -> Program:
    return open_prog(vmcore, vmlinux)


@cache
def _btf(vmcore: str) -> Dump:
    return open_dump(vmcore, use_vmlinux=False)


@pytest.fixture
def progs(sample_manifest: dict[str, Any]) -> tuple[Program, Program]:
    """(DWARF program, BTF program) on the sample's kdump."""
    vmcore = _kdump(sample_manifest)
    dump = _btf(vmcore)
    assert dump.debuginfo == FROM_BTF and dump.vmlinux is None
    return _dwarf(vmcore, sample_manifest["vmlinux"]), dump.prog


def _shape(type_: Type, depth: int = 0) -> Any:
    """
    What a walk depends on in *type_*: kind, size, and for structs and unions
    each member's name, bit offset, bit field size and shape (anonymous
    members and, one level deep, named ones too). Typedefs are seen through,
    as drgn sees through them when reading.
    """
    while type_.kind == TypeKind.TYPEDEF:
        type_ = type_.type
    shape: list[Any] = [type_.kind.name, type_.qualifiers]
    if type_.kind in (TypeKind.STRUCT, TypeKind.UNION):
        shape.append(type_.tag)
        if not type_.is_complete():
            return shape
        shape.append(type_.size)
        for member in type_.members:
            inner = member.type
            deep = member.name is None or depth < 1
            shape.append(
                (
                    member.name,
                    member.bit_offset,
                    member.bit_field_size,
                    _shape(inner, depth + (member.name is not None)) if deep else _name(inner),
                )
            )
    elif type_.kind == TypeKind.ARRAY:
        # BTF cannot tell a flexible array (x[]) from x[0] (both are 0 long),
        # and pahole flattens x[4][2][5] into x[40]: the bytes are the same.
        shape.append(_name(type_))
    elif type_.kind == TypeKind.POINTER:
        shape.append(_name(type_.type))
    elif type_.kind in (TypeKind.INT, TypeKind.BOOL, TypeKind.ENUM) and type_.is_complete():
        shape += [drgn.sizeof(type_), type_.kind == TypeKind.INT and type_.is_signed]
    return shape


def _name(type_: Type) -> str:
    """
    A type's name, typedefs resolved in what it points to or holds (kernels
    write ``pg_data_t *`` or ``struct pglist_data *`` for one type), arrays
    of arrays flattened (as pahole writes them in BTF).
    """
    suffix = ""
    elements = 1
    while type_.kind in (TypeKind.POINTER, TypeKind.ARRAY, TypeKind.TYPEDEF):
        if type_.kind == TypeKind.POINTER:
            if elements != 1:
                suffix = f"[{elements}]" + suffix
            suffix, elements = "*" + suffix, 1
        elif type_.kind == TypeKind.ARRAY:
            elements *= type_.length or 0
        type_ = type_.type
    if elements != 1:
        suffix += f"[{elements}]"
    return f"{type_.qualifiers!s} {type_.type_name()} {suffix}".strip()


@pytest.mark.parametrize("name", SLAB_TYPES)
def test_slab_types_have_dwarfs_layout(progs: tuple[Program, Program], name: str) -> None:
    dwarf, btf = progs
    try:
        want = dwarf.type(name)
    except LookupError:
        pytest.skip(f"{name} is not in this kernel")
    got = btf.type(name)
    assert _shape(got) == _shape(want)
    if want.kind != TypeKind.TYPEDEF:
        assert drgn.sizeof(got) == drgn.sizeof(want)


def test_most_named_structs_equal_dwarf(progs: tuple[Program, Program]) -> None:
    """
    Every named struct BTF has, against DWARF: sizes equal for all but the
    few that the kernel defines twice with different layouts (a name BTF and
    DWARF may resolve to different definitions).
    """
    dwarf, btf_prog = progs
    data = _btf_blob(btf_prog)
    parsed = KernelBtf(btf_prog, data)
    checked = differ = 0
    for name in _struct_names(parsed):
        try:
            want = dwarf.type(f"struct {name}")
        except LookupError:
            continue
        got = btf_prog.type(f"struct {name}")
        if not want.is_complete() or not got.is_complete():
            continue
        checked += 1
        if want.size != got.size or [m.bit_offset for m in want.members] != [
            m.bit_offset for m in got.members
        ]:
            differ += 1
    assert checked > 5000
    assert differ <= checked // 100, f"{differ} of {checked} structs differ"


def _btf_blob(prog: Program) -> bytes:
    start, stop = prog.symbol("__start_BTF").address, prog.symbol("__stop_BTF").address
    return prog.read(start, stop - start)


def _struct_names(btf: KernelBtf) -> list[str]:
    kinds = TypeKindSet({TypeKind.STRUCT})
    return [name for name in btf._by_name if btf.find_type(kinds, name) is not None]


@pytest.mark.parametrize("name", sorted(KERNEL_GLOBALS))
def test_globals_match_dwarf(progs: tuple[Program, Program], name: str) -> None:
    dwarf, btf = progs
    try:
        want = dwarf.variable(name)
    except LookupError:
        pytest.skip(f"{name} is not in this kernel")
    got = btf.variable(name)
    assert got.address_ == want.address_
    if want.type_.kind == TypeKind.ARRAY and KERNEL_GLOBALS[name].endswith("[]"):
        # The length of a [] array comes from the symbol's size: at least DWARF's.
        assert _name(got.type_.type) == _name(want.type_.type)
        assert got.type_.length is not None and want.type_.length is not None
        assert want.type_.length <= got.type_.length <= want.type_.length + 8
    else:
        assert _name(got.type_) == _name(want.type_)
        assert _shape(got.type_) == _shape(want.type_)
    assert btf.read(got.address_, drgn.sizeof(want)) == dwarf.read(want.address_, drgn.sizeof(want))


def test_per_cpu_variables_from_btf(progs: tuple[Program, Program]) -> None:
    """Per-CPU variables come from BTF's .data..percpu section: DWARF's address and type."""
    dwarf, btf = progs
    for name in ("runqueues", "current_task", "cpu_number", "this_cpu_off"):
        try:
            want = dwarf.variable(name)
        except LookupError:
            continue
        got = btf.variable(name)
        assert got.address_ == want.address_, name
        assert got.type_.type_name() == want.type_.type_name(), name


@pytest.mark.parametrize(
    "name",
    [
        "PG_slab",
        "PG_head",
        "NR_SLAB_RECLAIMABLE_B",
        "NR_SLAB_UNRECLAIMABLE_B",
        "KERNFS_LINK",
        "NR_NODE_STATES",
        "N_ONLINE",
    ],
)
def test_enumerators_match_dwarf(progs: tuple[Program, Program], name: str) -> None:
    dwarf, btf = progs
    try:
        want = dwarf.constant(name)
    except LookupError:
        pytest.skip(f"{name} is not in this kernel")
    got = btf.constant(name)
    assert got.value_() == want.value_()
    assert got.type_.type_name() == want.type_.type_name()


def test_functions_match_dwarf(progs: tuple[Program, Program]) -> None:
    dwarf, btf = progs
    for name in ("vmemmap_populate", "kmem_cache_alloc", "__kmalloc", "kfree"):
        try:
            want = dwarf.function(name)
        except LookupError:
            continue
        got = btf.function(name)
        assert got.address_ == want.address_, name
        assert got.type_.kind == TypeKind.FUNCTION
        assert len(got.type_.parameters) == len(want.type_.parameters), name


def test_kallsyms_match_dwarf_symbols(progs: tuple[Program, Program]) -> None:
    """kallsyms gives the ELF symbol table's addresses, KASLR applied."""
    dwarf, btf = progs
    for name in ("slab_caches", "_stext", "__start_BTF", "kmalloc_caches", "init_task"):
        assert btf.symbol(name).address == dwarf.symbol(name).address, name
    address = dwarf.symbol("kmem_cache_free").address + 4
    assert btf.symbol(address).name == "kmem_cache_free"


def test_module_symbols_from_their_kallsyms(
    progs: tuple[Program, Program], sample_manifest: dict[str, Any]
) -> None:
    """The sample module's symbols, read from its own kallsyms in memory."""
    from drgn.helpers.linux.kallsyms import load_module_kallsyms

    dwarf, btf = progs
    want: dict[str, set[int]] = {}
    for symbol in load_module_kallsyms(dwarf)(dwarf, None, None, False):
        want.setdefault(symbol.name, set()).add(symbol.address)
    # leaky_agent's own functions (its init function was freed after init).
    assert "new_rule" in want and "agent_table" in want
    for name, addresses in want.items():
        # vmlinux may have symbols of the same name (__func__.23) too.
        assert addresses <= {s.address for s in btf.symbols(name)}, name
    (new_rule,) = want["new_rule"]
    assert btf.symbol(new_rule + 1).name == "new_rule"


def test_cache_aliases_match_dwarf(progs: tuple[Program, Program]) -> None:
    """drgn's merged-cache aliases (sysfs links under slab_kset) read alike on BTF."""
    from drgn.helpers.linux.slab import get_slab_cache_aliases

    dwarf, btf = progs
    aliases = get_slab_cache_aliases(btf)
    assert aliases and aliases == get_slab_cache_aliases(dwarf)


def test_no_debuginfo_flags(progs: tuple[Program, Program]) -> None:
    """The BTF program finds only what it was given: no DWARF, filename lookups miss."""
    _, btf = progs
    with pytest.raises(LookupError):
        btf.variable("slab_caches", "mm/slab_common.c")
    with pytest.raises(LookupError):
        btf.object("no_such_symbol_in_any_kernel", FindObjectFlags.ANY)


def test_vmcoreinfo_symbols_parses_symbol_lines() -> None:
    text = "OSRELEASE=6.1.0\nSYMBOL(kallsyms_names)=ffffffff81a00000\nSYMBOL(bad)=xyz\n"
    assert vmcoreinfo_symbols(text) == {"kallsyms_names": 0xFFFFFFFF81A00000}


# --- a hand-made BTF blob ------------------------------------------------------------------


class _Blob:
    """Assemble a BTF blob: types are appended, strings interned."""

    def __init__(self) -> None:
        self.types = b""
        self.strings = b"\0"
        self.count = 0

    def s(self, text: str | None) -> int:
        if not text:
            return 0
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(self, kind: int, name: str | None, vlen: int, size_or_type: int, rest: bytes = b"",
            kind_flag: int = 0) -> int:  # fmt: skip
        info = (kind_flag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + rest
        self.count += 1
        return self.count

    def data(self) -> bytes:
        header = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return header + self.types + self.strings


def _sample_btf() -> bytes:
    """A blob of every BTF kind a kernel type uses, numbered as the comments say."""
    b = _Blob()
    u32 = b.add(1, "unsigned int", 0, 4, struct.pack("<I", 32))  # 1
    i64 = b.add(1, "long", 0, 8, struct.pack("<I", 1 << 24 | 64))  # 2
    b.add(2, None, 0, 4)  # 3: struct node *
    members = struct.pack("<III", b.s("next"), 3, 0)
    members += struct.pack("<III", b.s("flags"), u32, 3 << 24 | 64)
    members += struct.pack("<III", b.s("mode"), u32, 5 << 24 | 67)
    members += struct.pack("<III", 0, 6, 128)
    members += struct.pack("<III", b.s("tail"), 12, 192)
    b.add(4, "node", 5, 24, members, kind_flag=1)  # 4
    b.add(7, "node", 0, 0)  # 5
    union = struct.pack("<III", b.s("a"), u32, 0) + struct.pack("<III", b.s("b"), i64, 0)
    b.add(5, None, 2, 8, union)  # 6
    enum = struct.pack("<Ii", b.s("NEG"), -1) + struct.pack("<Ii", b.s("POS"), 7)
    b.add(6, "sgn", 2, 4, enum, kind_flag=1)  # 7
    b.add(19, "big", 1, 8, struct.pack("<III", b.s("BIG"), 0, 1))  # 8
    params = struct.pack("<II", b.s("n"), u32) + struct.pack("<II", 0, 0)
    b.add(13, None, 2, i64, params)  # 9
    b.add(10, None, 0, 5)  # 10: const struct node (through the declaration)
    b.add(8, "node_t", 0, 10)  # 11
    b.add(3, None, 0, 0, struct.pack("<III", 13, u32, 0))  # 12: char []
    b.add(1, "char", 0, 1, struct.pack("<I", 1 << 24 | 8))  # 13
    b.add(12, "walk", 1, 9)  # 14: a global function
    old = struct.pack("<III", b.s("lo"), 16, 0) + struct.pack("<III", b.s("hi"), 16, 4)
    b.add(4, "old_bits", 2, 4, old)  # 15: bit fields without kind_flag
    b.add(1, "unsigned int", 0, 4, struct.pack("<I", 4))  # 16: a 4-bit int
    b.add(1, "_Bool", 0, 1, struct.pack("<I", 4 << 24 | 8))  # 17
    b.add(6, None, 1, 4, struct.pack("<Ii", b.s("ANON_A"), 5))  # 18: an anonymous enum
    return b.data()


@pytest.fixture
def tiny() -> tuple[Program, KernelBtf]:
    prog = Program(drgn.host_platform)
    btf = KernelBtf(prog, _sample_btf())
    prog.register_type_finder(
        "btf", lambda p, kinds, name, filename: btf.find_type(kinds, name), enable_index=0
    )
    return prog, btf


def test_tiny_struct_members(tiny: tuple[Program, KernelBtf]) -> None:
    prog, _ = tiny
    node = prog.type("struct node")
    assert node.size == 24
    assert [(m.name, m.bit_offset, m.bit_field_size) for m in node.members] == [
        ("next", 0, None),
        ("flags", 64, 3),
        ("mode", 67, 5),
        (None, 128, None),
        ("tail", 192, None),
    ]
    # Self-reference, resolved lazily; the anonymous union's members reach through.
    pointed = node.member("next").type.type
    assert pointed.tag == "node" and pointed.size == 24
    assert node.member("b").bit_offset == 128
    assert node.member("b").type.type_name() == "long"
    tail = node.member("tail").type
    assert tail.kind == TypeKind.ARRAY and tail.length == 0


def test_tiny_declarations_typedefs_and_qualifiers(tiny: tuple[Program, KernelBtf]) -> None:
    prog, _ = tiny
    node_t = prog.type("node_t")
    assert node_t.kind == TypeKind.TYPEDEF
    assert node_t.type.qualifiers == drgn.Qualifiers.CONST
    assert node_t.type.size == 24  # the declaration found its definition


def test_tiny_enums(tiny: tuple[Program, KernelBtf]) -> None:
    prog, btf = tiny
    sgn = prog.type("enum sgn")
    assert [(e.name, e.value) for e in sgn.enumerators] == [("NEG", -1), ("POS", 7)]
    assert sgn.type.is_signed
    big = prog.type("enum big")
    assert big.enumerators[0].value == 1 << 32 and big.type.size == 8
    found = btf.enumerator("BIG")
    assert found is not None and found.value_() == 1 << 32
    anonymous = btf.enumerator("ANON_A")
    assert anonymous is not None and anonymous.value_() == 5


def test_tiny_functions_and_bool(tiny: tuple[Program, KernelBtf]) -> None:
    prog, btf = tiny
    walk = btf.function_type("walk")
    assert walk is not None and walk.kind == TypeKind.FUNCTION
    assert walk.is_variadic and [p.name for p in walk.parameters] == ["n"]
    assert walk.type.type_name() == "long"
    assert prog.type("_Bool").kind == TypeKind.BOOL


def test_tiny_bit_fields_without_kind_flag(tiny: tuple[Program, KernelBtf]) -> None:
    prog, _ = tiny
    old = prog.type("struct old_bits")
    assert [(m.bit_offset, m.bit_field_size) for m in old.members] == [(0, 4), (4, 4)]


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda d: d[:10], "shorter than its header"),
        (lambda d: b"\0\0" + d[2:], "no BTF magic"),
        (lambda d: d[:2] + b"\x02" + d[3:], "version 2"),
        (lambda d: d[:-5], "past the end"),
        (lambda d: d[:24] + d[24:28] + struct.pack("<I", 31 << 24) + d[32:], "unknown kind"),
    ],
)
def test_corrupt_btf_is_refused(cut: Any, message: str) -> None:
    with pytest.raises(BtfError, match=message):
        KernelBtf(Program(drgn.host_platform), cut(_sample_btf()))
