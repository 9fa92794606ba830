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

from bisect import bisect_right
from collections.abc import Sequence

from drgn import (
    FindObjectFlags,
    Object,
    Program,
    Symbol,
    SymbolIndex,
    SymbolKind,
    sizeof,
)
from drgn.helpers.linux.kallsyms import load_module_kallsyms, load_vmlinux_kallsyms

from dumpminer.btf import KernelBtf

__all__ = [
    "KALLSYMS_FINDER",
    "KERNEL_GLOBALS",
    "MODULE_SYMBOLS",
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
    # slab_object_info() asks first (pointer attribution, dumpminer/words.py).
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


#: The name dumpminer.dump registers vmlinux's kallsyms under (no vmlinux).
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
