"""
Symbols from kallsyms and the few globals the slab code needs, for a dump
opened without a vmlinux.

Since Linux 6.0, VMCOREINFO names the kallsyms tables
(``SYMBOL(kallsyms_names)`` and the rest), and drgn's
:func:`~drgn.helpers.linux.kallsyms.load_vmlinux_kallsyms` decodes them into
a symbol index: every function and variable of vmlinux, at its address after
KASLR (drgn takes the offset from VMCOREINFO's ``KERNELOFFSET``). Loaded
modules keep their own symbol tables in memory;
:func:`~drgn.helpers.linux.kallsyms.load_module_kallsyms` reads them once the
types of ``struct module`` are known, which BTF provides.

A symbol is an address without a type. BTF gives the types of functions and
of per-CPU variables, but not of other globals, so the globals that
dumpminer's walk and drgn's slab, memory and per-CPU helpers read are
declared here, as in the kernel's headers (:data:`KERNEL_GLOBALS`). A global
missing from that table is not found, as in a program without its
declaration: tests/test_nodebuginfo.py runs every command with a vmlinux and
without, so a new helper that reads another global fails a test, not a user.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from drgn import (
    FindObjectFlags,
    Object,
    Program,
    Symbol,
    SymbolBinding,
    SymbolIndex,
    SymbolKind,
    sizeof,
)
from drgn.helpers.linux.kallsyms import load_module_kallsyms, load_vmlinux_kallsyms

from dumpminer.dump.btf import KernelBtf
from dumpminer.dump.kernel import kernel_version

__all__ = [
    "KALLSYMS_FINDER",
    "KERNEL_GLOBALS",
    "MAX_SYMBOL_LENGTH",
    "MODULE_SYMBOLS",
    "KallsymsTable",
    "KernelObjects",
    "ModuleSymbols",
    "add_module_symbols",
    "load_kallsyms",
    "vmcoreinfo_symbols",
]

#: Globals that dumpminer and drgn's helpers read, with their C types (as
#: declared in 6.1 to 6.12). An array's length is an enumerator, or for
#: ``[]`` (a length given by a macro) what the symbol's size holds.
KERNEL_GLOBALS: dict[str, str] = {
    # The cache list (mm/slab_common.c) and the sysfs aliases (mm/slub.c).
    "slab_caches": "struct list_head",
    "slab_kset": "struct kset *",
    # The page array: SPARSEMEM_EXTREME sections (mm/sparse.c).
    "mem_section": "struct mem_section **",
    "__highest_present_section_nr": "unsigned long",
    # x86_64 KASLR bases (arch/x86/kernel/head64.c).
    "page_offset_base": "unsigned long",
    "vmemmap_base": "unsigned long",
    "vmalloc_base": "unsigned long",
    # The highest page frame (mm/memblock.c): the page array's end when mem_section is lost.
    "max_pfn": "unsigned long",
    # The direct map's page frames (mm/memblock.c): drgn's in_direct_map(), which
    # slab_object_info() asks first (pointer attribution, dumpminer/analysis/words.py).
    "min_low_pfn": "unsigned long",
    "max_low_pfn": "unsigned long",
    # Per-CPU data (mm/percpu.c, kernel/cpu.c).
    "__per_cpu_offset": "unsigned long []",
    "nr_cpu_ids": "unsigned int",
    "__cpu_online_mask": "struct cpumask",
    "__cpu_possible_mask": "struct cpumask",
    "__cpu_present_mask": "struct cpumask",
    # NUMA nodes (mm/page_alloc.c).
    "nr_node_ids": "unsigned int",
    "node_states": "nodemask_t [NR_NODE_STATES]",
    "node_data": "pg_data_t *[]",
    # Page counters (mm/vmstat.c): slab totals.
    "vm_node_stat": "atomic_long_t [NR_VM_NODE_STAT_ITEMS]",
    "vm_zone_stat": "atomic_long_t [NR_VM_ZONE_STAT_ITEMS]",
    # Modules, for their symbols (kernel/module/main.c).
    "modules": "struct list_head",
    "init_uts_ns": "struct uts_namespace",
}


def vmcoreinfo_symbols(vmcoreinfo: str) -> dict[str, int]:
    """The ``SYMBOL(name)=hex`` lines of a VMCOREINFO note."""
    out = {}
    for line in vmcoreinfo.splitlines():
        if line.startswith("SYMBOL(") and ")=" in line:
            name, _, value = line[len("SYMBOL(") :].partition(")=")
            try:
                out[name] = int(value, 16)
            except ValueError:
                continue
    return out


#: What VMCOREINFO must name for drgn to decode kallsyms (Linux 6.0 on).
KALLSYMS_VMCOREINFO = ("kallsyms_names", "kallsyms_num_syms", "kallsyms_token_table")


def load_kallsyms(prog: Program) -> SymbolIndex:
    """
    The symbols of vmlinux, decoded from the kallsyms tables that VMCOREINFO
    points to. Raises :class:`LookupError` naming what VMCOREINFO lacks.
    """
    vmcoreinfo = prog["VMCOREINFO"].string_().decode(errors="replace")
    missing = [n for n in KALLSYMS_VMCOREINFO if n not in vmcoreinfo_symbols(vmcoreinfo)]
    if missing:
        raise LookupError(f"VMCOREINFO has no SYMBOL({missing[0]})")
    return load_vmlinux_kallsyms(prog)


#: drgn gives a kallsyms symbol the distance to the next one as its size,
#: and no size (it contains no address) from this distance on: the gap
#: after the last symbol of a section is not part of it (MAX_SYMBOL_LENGTH
#: of libdrgn/kallsyms.c).
MAX_SYMBOL_LENGTH = 0x10000
#: kallsyms_markers holds the offset in kallsyms_names of every this-many-th name.
_NAMES_PER_MARKER = 256
#: Symbol kinds by nm's type letter, lower-cased, as drgn reads them.
_KINDS = {"t": SymbolKind.FUNC, **dict.fromkeys("bcdgrv", SymbolKind.OBJECT)}


class KallsymsTable:
    """
    vmlinux's kallsyms, read on demand: every symbol's address at once (one
    read of ``kallsyms_offsets``), a name only when a lookup finds it.

    drgn's :func:`~drgn.helpers.linux.kallsyms.load_vmlinux_kallsyms`
    decodes every name first (about 0.06 s for Debian's 87,000 to 155,000
    symbols); naming a few pointers in a report needs a dozen. A name is
    found from ``kallsyms_markers`` (where every 256th name starts), which
    VMCOREINFO does not name: the vmlinux's symbol table does, so this is
    for dumps opened with a vmlinux. Without one, the program's symbols are
    drgn's kallsyms index already.

    Lookups by address return what drgn's index returns (the same symbol,
    address, size, kind and binding; tests/test_kallsyms.py compares every
    symbol): each symbol extends to the next one's address, unless that is
    :data:`MAX_SYMBOL_LENGTH` or more away.
    """

    def __init__(
        self,
        prog: Program,
        addresses: npt.NDArray[np.uint64],
        names: int,
        markers: npt.NDArray[np.uint32],
        tokens: list[bytes],
        long_names: bool,
    ) -> None:
        self.prog = prog
        #: Every symbol's address, in kallsyms order (ascending).
        self.addresses = addresses
        self._names = names
        self._markers = markers
        self._tokens = tokens
        self._long_names = long_names
        self._decoded: dict[int, tuple[str, str]] = {}

    @classmethod
    def read(cls, prog: Program) -> KallsymsTable:
        """
        Read the tables of *prog*'s kernel. Raises :class:`LookupError` when
        one is missing or laid out in a way this does not know (the caller
        then uses drgn's loader), :class:`~drgn.FaultError` when unreadable.
        """
        vmcoreinfo = prog["VMCOREINFO"].string_().decode(errors="replace")
        where = vmcoreinfo_symbols(vmcoreinfo)
        missing = [n for n in (*KALLSYMS_VMCOREINFO, "kallsyms_token_index") if n not in where]
        if missing:
            raise LookupError(f"VMCOREINFO has no SYMBOL({missing[0]})")
        count = prog.read_u32(where["kallsyms_num_syms"])
        addresses = _kallsyms_addresses(prog, where, count)
        markers = np.frombuffer(
            prog.read(prog.symbol("kallsyms_markers").address, 4 * _marker_count(count)), "<u4"
        )
        if count == 0 or markers[0] != 0 or np.any(np.diff(markers.astype(np.int64)) <= 0):
            raise LookupError("kallsyms_markers is not a table of 32-bit offsets")
        index = np.frombuffer(prog.read(where["kallsyms_token_index"], 512), "<u2")
        table = _read_until_nul(prog, where["kallsyms_token_table"], int(index.max()))
        tokens = [table[i : table.index(b"\0", i)] for i in index.tolist()]
        return cls(prog, addresses, where["kallsyms_names"], markers, tokens,
                   _long_names(vmcoreinfo))  # fmt: skip

    def __call__(
        self, prog: Program, name: str | None, address: int | None, one: bool
    ) -> list[Symbol]:
        """The symbols holding *address*, as a drgn symbol finder (lookups by address only)."""
        if name is not None or address is None:
            raise NotImplementedError("KallsymsTable looks symbols up by address only")
        return self.symbols(address)

    def symbols(self, address: int) -> list[Symbol]:
        """The symbol holding *address* (a list of none or one, as drgn's index gives)."""
        i = int(np.searchsorted(self.addresses, np.uint64(address), side="right")) - 1
        if i < 0 or i + 1 >= len(self.addresses):
            return []
        start = int(self.addresses[i])
        size = int(self.addresses[i + 1]) - start
        if size >= MAX_SYMBOL_LENGTH or address >= start + size:
            return []
        name, letter = self.name(i)
        return [
            Symbol(
                name, start, size, _binding(letter), _KINDS.get(letter.lower(), SymbolKind.UNKNOWN)
            )
        ]

    def name(self, i: int) -> tuple[str, str]:
        """Symbol *i*'s name and its nm type letter, decoded from the names table."""
        found = self._decoded.get(i)
        if found is None:
            found = self._decoded[i] = self._decode(i)
        return found

    def _decode(self, i: int) -> tuple[str, str]:
        reader = _ByteReader(self.prog, self._names + int(self._markers[i // _NAMES_PER_MARKER]))
        for _ in range(i % _NAMES_PER_MARKER):
            reader.skip(self._length(reader))
        length = self._length(reader)
        text = b"".join(self._tokens[t] for t in reader.take(length))
        if not text:
            raise LookupError(f"kallsyms symbol {i} has an empty name")
        decoded = text.decode(errors="replace")
        return decoded[1:], decoded[0]

    def _length(self, reader: _ByteReader) -> int:
        """A name's length in tokens: one byte, or two since Linux 6.1 (drgn's guess)."""
        length = reader.take(1)[0]
        if length & 0x80 and self._long_names:
            high = reader.take(1)[0]
            if high & 0x80:
                raise LookupError("a kallsyms name length of three bytes")
            length = (length & 0x7F) | high << 7
        return length


class _ByteReader:
    """Bytes of the dump read forward from an address, a page-sized piece at a time."""

    def __init__(self, prog: Program, address: int) -> None:
        self.prog = prog
        self.address = address
        self.data = b""
        self.at = 0

    def take(self, n: int) -> bytes:
        """The next *n* bytes."""
        while len(self.data) < self.at + n:
            self.data += self.prog.read(self.address + len(self.data), 4096)
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def skip(self, n: int) -> None:
        """Pass over the next *n* bytes."""
        self.take(n)


def _marker_count(symbols: int) -> int:
    return (symbols + _NAMES_PER_MARKER - 1) // _NAMES_PER_MARKER


def _kallsyms_addresses(prog: Program, where: dict[str, int], count: int) -> npt.NDArray[np.uint64]:
    """
    Every symbol's address, decoded as drgn decodes them (absolute, relative
    to ``kallsyms_relative_base``, absolute per-CPU, or relative to their own
    place, whichever puts ``_stext`` where VMCOREINFO says it is), ascending.
    """
    if "kallsyms_addresses" in where:
        decoded = [np.frombuffer(prog.read(where["kallsyms_addresses"], 8 * count), "<u8")]
    elif "kallsyms_offsets" in where:
        # Wrapping 64-bit arithmetic throughout, as the C it mirrors.
        offsets = where["kallsyms_offsets"]
        raw = np.frombuffer(prog.read(offsets, 4 * count), "<u4")
        widened = raw.astype(np.uint64)
        signed = raw.view("<i4").astype(np.int64).astype(np.uint64)  # sign-extended
        decoded = []
        if "kallsyms_relative_base" in where:
            base = np.full(count, prog.read_u64(where["kallsyms_relative_base"]), np.uint64)
            decoded.append(base + widened)
            decoded.append(np.where(raw.view("<i4") >= 0, signed, base - np.uint64(1) - signed))
        place = np.full(count, offsets, np.uint64) + np.arange(count, dtype=np.uint64) * np.uint64(
            4
        )
        decoded.append(place + signed)
    else:
        raise LookupError("VMCOREINFO names neither kallsyms_offsets nor kallsyms_addresses")
    stext = np.uint64(where.get("_stext", 0))
    for addresses in decoded:
        # drgn tells the encodings apart by _stext's own entry, which it
        # finds by decoding every name; here it is the first one that puts
        # _stext anywhere in an ascending table (a wrong one breaks the
        # order: per-CPU offsets read as relative ones lie below the text).
        if np.any(addresses == stext) and not np.any(addresses[1:] < addresses[:-1]):
            return addresses
    raise LookupError("kallsyms addresses: no known encoding puts _stext in an ascending table")


def _read_until_nul(prog: Program, address: int, at_least: int) -> bytes:
    """Bytes from *address* through the first NUL at or after offset *at_least*."""
    data: bytes = prog.read(address, at_least + 256)
    while data.find(b"\0", at_least) < 0:
        data += prog.read(address + len(data), 256)
    return data


def _long_names(vmcoreinfo: str) -> bool:
    """
    Whether name lengths can take two bytes: drgn's guess, Linux 6.1 on, or
    what ``DRGN_KALLSYMS_LONG`` says (read the same way, so both agree).
    """
    env = os.environ.get("DRGN_KALLSYMS_LONG")
    if env and env[0] in "1yY0nN":
        return env[0] in "1yY"
    release = next(
        (line[10:] for line in vmcoreinfo.splitlines() if line.startswith("OSRELEASE=")), ""
    )
    return kernel_version(release) >= (6, 1)


def _binding(letter: str) -> SymbolBinding:
    """A kallsyms symbol's binding by its nm type letter, as drgn reads it."""
    if letter == "u":
        return SymbolBinding.UNIQUE
    if letter.lower() in "vw":
        return SymbolBinding.WEAK
    return SymbolBinding.GLOBAL if letter.isupper() else SymbolBinding.UNKNOWN


class KernelObjects:
    """
    A drgn object finder for a kernel read with BTF and kallsyms: enumerators
    and functions from BTF, per-CPU variables from BTF's ``.data..percpu``
    section, and the globals of :data:`KERNEL_GLOBALS`, all at their kallsyms
    addresses.
    """

    def __init__(self, btf: KernelBtf, symbols: SymbolIndex) -> None:
        self.btf = btf
        self.symbols = symbols
        #: Every symbol's address, sorted; read on first need.
        self._addresses: list[int] | None = None

    def _symbol(self, name: str) -> Symbol | None:
        found = self.symbols(self.btf.prog, name, None, True)
        return found[0] if found else None

    def __call__(
        self, prog: Program, name: str, flags: FindObjectFlags, filename: str | None
    ) -> Object | None:
        """Find *name* as drgn's object finders do (see Program.register_object_finder)."""
        if filename is not None:
            return None  # BTF does not know which file declared what.
        if flags & FindObjectFlags.CONSTANT:
            found = self.btf.enumerator(name)
            if found is not None:
                return found
        if flags & FindObjectFlags.FUNCTION:
            found = self._function(prog, name)
            if found is not None:
                return found
        if flags & FindObjectFlags.VARIABLE:
            return self._variable(prog, name)
        return None

    def _function(self, prog: Program, name: str) -> Object | None:
        symbol = self._symbol(name)
        if symbol is None or symbol.kind != SymbolKind.FUNC:
            return None
        type_ = self.btf.function_type(name)
        if type_ is None:
            # kallsyms knows it but BTF does not describe it: a function
            # still, called with unknown arguments.
            type_ = prog.function_type(prog.void_type(), (), True)
        return Object(prog, type_, address=symbol.address)

    def _variable(self, prog: Program, name: str) -> Object | None:
        declared = KERNEL_GLOBALS.get(name)
        variable = self.btf.variable(name) if declared is None else None
        if declared is None and variable is None:
            return None
        symbol = self._symbol(name)
        if symbol is None:
            return None
        if variable is not None:
            return Object(prog, self.btf.type(variable.type_id), address=symbol.address)
        assert declared is not None
        if declared.endswith("]"):
            element_name, _, count = declared[:-1].partition("[")
            element = prog.type(element_name.strip())
            return Object(
                prog,
                prog.array_type(element, self._length(prog, count, symbol, sizeof(element))),
                address=symbol.address,
            )
        return Object(prog, declared, address=symbol.address)

    def _length(self, prog: Program, count: str, symbol: Symbol, element_size: int) -> int | None:
        """
        The length of an array: an enumerator's value (``NR_NODE_STATES``),
        or for ``[]`` (a macro's length, like ``NR_CPUS``) what fits in the
        symbol's size, which kallsyms takes from the next symbol's address.
        """
        if count:
            found = self.btf.enumerator(count)
            return None if found is None else found.value_()
        size = symbol.size or self._gap_after(prog, symbol.address)
        return size // element_size if size and element_size else None

    def _gap_after(self, prog: Program, address: int) -> int:
        """
        Bytes from *address* to the next symbol: the size of a symbol that
        kallsyms gives as 0 (another symbol shares its address).
        """
        if self._addresses is None:
            everything = self.symbols(prog, None, None, False)
            self._addresses = sorted({s.address for s in everything})
        following = bisect_right(self._addresses, address)
        if following == len(self._addresses):
            return 0
        return int(self._addresses[following] - address)


class ModuleSymbols:
    """
    A drgn symbol finder for loaded modules' symbols, read from their own
    kallsyms in memory the first time a symbol is looked up that vmlinux
    does not have.
    """

    def __init__(self) -> None:
        self._index: SymbolIndex | None = None

    def __call__(
        self, prog: Program, name: str | None, address: int | None, one: bool
    ) -> Sequence[Symbol]:
        """Find symbols as drgn's symbol finders do (see Program.register_symbol_finder)."""
        if self._index is None:
            self._index = load_module_kallsyms(prog)
        return list(self._index(prog, name, address, one))


#: The name dumpminer.dump.open registers vmlinux's kallsyms under (no vmlinux).
KALLSYMS_FINDER = "kallsyms"

#: The name :func:`add_module_symbols` registers its symbol finder under.
MODULE_SYMBOLS = "module_kallsyms"


def add_module_symbols(prog: Program) -> None:
    """
    Let ``prog.symbol()`` name addresses in loaded modules from the modules'
    own kallsyms, after every other finder (DWARF of a vmlinux, or the
    kernel's kallsyms). A dump is rarely opened with every module's
    debuginfo, yet call sites and pointers into a leaking module are what a
    leak hunt needs named. Idempotent: a program that has the finder keeps it.
    """
    if MODULE_SYMBOLS not in prog.registered_symbol_finders():
        prog.register_symbol_finder(MODULE_SYMBOLS, ModuleSymbols(), enable_index=-1)
