"""Independent oracle for the sample vmcores: counts planted records with drgn's own helpers.

Nothing here uses dumpminer: it is what dumpminer's results are checked against. It walks a
slab cache with drgn.helpers.linux.slab, reads every allocated object, recognises
leaky_agent's records by their header (len, type < 0x20, magic at offset 2, a zero u32 at
offset 4) and counts the NUL-terminated string at the manifest's string_offset. For the
fragment counts it finds printable runs with a plain regular expression (what ``strings``
does), in the objects and in the context windows around them.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from typing import Any

import drgn
from drgn.helpers.linux.slab import (
    find_slab_cache,
    slab_cache_for_each_allocated_object,
    slab_cache_usage,
)


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


# --------------------------------------------------------------------------
# Fragments: what ``strings`` would show, counted per object and per window
# --------------------------------------------------------------------------

#: A maximal run of printable ASCII (space to tilde), as ``strings`` finds them.
PRINTABLE_RUN = re.compile(rb"[\x20-\x7e]+")


def printable_texts(data: bytes, min_length: int) -> list[str]:
    """Every maximal printable run of *data* at least *min_length* bytes long, in order."""
    return [
        m.group().decode("ascii")
        for m in PRINTABLE_RUN.finditer(data)
        if len(m.group()) >= min_length
    ]


def allocated_objects(prog: drgn.Program, cache_name: str) -> list[int]:
    """Addresses of the allocated objects of *cache_name*, ascending, by drgn's helper."""
    cache = find_slab_cache(prog, cache_name)
    assert cache is not None, f"no slab cache {cache_name}"
    return sorted(obj.value_() for obj in slab_cache_for_each_allocated_object(cache, "void"))


def allocated_count(prog: drgn.Program, cache_name: str) -> int:
    """
    Allocated objects of *cache_name*: those drgn's enumeration
    (``slab_cache_for_each_allocated_object``) yields. Not drgn's
    ``slab_cache_usage``, whose count is wrong on many CPUs: it takes an
    active slab's ``inuse`` as full, missing the objects other CPUs freed
    into it (see :func:`usage_count`).
    """
    cache = find_slab_cache(prog, cache_name)
    return sum(1 for _ in slab_cache_for_each_allocated_object(cache, "void"))


def usage_count(prog: drgn.Program, cache_name: str) -> int:
    """Allocated objects of *cache_name* by drgn's ``slab_cache_usage`` (counters)."""
    usage = slab_cache_usage(find_slab_cache(prog, cache_name))
    return int(usage.num_objs - usage.free_objs)


def object_size(prog: drgn.Program, cache_name: str) -> int:
    """``object_size`` of *cache_name*."""
    return int(find_slab_cache(prog, cache_name).object_size.value_())


def fragment_objects(
    prog: drgn.Program, addresses: list[int], size: int, min_length: int, pointers: bool = False
) -> Counter[str]:
    """
    Per text: how many of the objects at *addresses* (of *size* bytes) hold
    it, runs of kernel-pointer bytes left out (:func:`without_pointers`)
    unless *pointers*.
    """
    counts: Counter[str] = Counter()
    for address in addresses:
        data = prog.read(address, size)
        text = data if pointers else without_pointers(data)
        counts.update(set(printable_texts(text, min_length)))
    return counts


def context_runs(
    prog: drgn.Program, addresses: list[int], size: int, before: int, after: int, min_length: int
) -> Counter[str]:
    """
    Per text: its runs in the context windows of the objects at *addresses*,
    the *before* bytes before each object and the *after* bytes after its
    *size* bytes, each window on its own (a run does not cross into the object).
    The whole aligned words of a window that hold kernel addresses are read
    as NUL (:func:`window_without_pointers`).
    """
    counts: Counter[str] = Counter()
    for address in addresses:
        for start, length in ((address - before, before), (address + size, after)):
            if length:
                data = window_without_pointers(start, prog.read(start, length))
                counts.update(printable_texts(data, min_length))
    return counts


def window_without_pointers(start: int, data: bytes) -> bytes:
    """
    *data*, read at address *start*, with every aligned 8-byte word that lies
    whole inside it and holds a kernel address read as NUL; the bytes of a
    word cut by the window's edge are kept, except when the word's value with
    the bytes outside read as NUL is still a kernel address (its top bytes
    lie inside: only the low bytes before the window are unknown).
    """
    lead = start % 8
    padded = bytes(lead) + data
    return without_pointers(padded)[lead:]


#: The lowest kernel address on x86-64: the upper canonical half.
KERNEL_HALF = 0xFFFF_8000_0000_0000


def kernel_words(data: bytes) -> list[int]:
    """Offsets of the aligned 8-byte words of *data* whose value is a kernel address."""
    return [
        at
        for at in range(0, len(data) - len(data) % 8, 8)
        if int.from_bytes(data[at : at + 8], "little") >= KERNEL_HALF
    ]


def without_pointers(data: bytes) -> bytes:
    """*data* (an object's bytes, 8-byte aligned) with every word holding a kernel address NUL."""
    out = bytearray(data)
    for at in kernel_words(data):
        out[at : at + 8] = bytes(8)
    return bytes(out)


def runs_at(data: bytes, min_length: int) -> list[tuple[int, int]]:
    """(start, end) of every maximal printable run of *data* at least *min_length* long."""
    return [
        (m.start(), m.end()) for m in PRINTABLE_RUN.finditer(data) if len(m.group()) >= min_length
    ]


def pointer_runs(prog: drgn.Program, addresses: list[int], size: int, min_length: int) -> set[str]:
    """
    The distinct printable runs made only of the bytes of kernel pointers in
    the objects at *addresses*: each aligned 8-byte word whose value is a
    kernel address kept, every other byte read as NUL.
    """
    runs: set[str] = set()
    for address in addresses:
        data = prog.read(address, size)
        kept = bytearray(size)
        for at in range(0, size - size % 8, 8):
            if int.from_bytes(data[at : at + 8], "little") >= KERNEL_HALF:
                kept[at : at + 8] = data[at : at + 8]
        runs.update(printable_texts(bytes(kept), min_length))
    return runs


def foreign_fragments(
    prog: drgn.Program, addresses: list[int], size: int, magic: str, min_length: int
) -> Counter[str]:
    """Per text: objects holding it among those without the module's *magic* (hex, at 2)."""
    magic_bytes = int(magic, 16).to_bytes(2, "little")
    counts: Counter[str] = Counter()
    for address in addresses:
        data = prog.read(address, size)
        if data[2:4] != magic_bytes:
            counts.update(set(printable_texts(without_pointers(data), min_length)))
    return counts


def cpu_active_slab(cpu_slab: drgn.Object) -> drgn.Object:
    """A ``struct kmem_cache_cpu``'s active slab: ``->slab`` from 5.17, ``->page`` before."""
    return cpu_slab.slab if cpu_slab.type_.type.has_member("slab") else cpu_slab.page


def slab_of_page(page: drgn.Object) -> drgn.Object:
    """The slab fields of a slab's head page: ``struct slab`` from 5.17, the page before."""
    try:
        return drgn.cast("struct slab *", page)
    except LookupError:
        return page


def cpu_slab_objects(prog: drgn.Program, cache_name: str) -> list[int]:
    """
    The allocated objects of *cache_name* that lie in a CPU's active slab
    (``cpu_slab->slab`` of each possible CPU), by drgn's helper, ascending.
    """
    from drgn.helpers.linux.cpumask import for_each_possible_cpu
    from drgn.helpers.linux.mm import page_to_virt
    from drgn.helpers.linux.percpu import per_cpu_ptr
    from drgn.helpers.linux.slab import slab_cache_pages_per_slab

    cache = find_slab_cache(prog, cache_name)
    span = slab_cache_pages_per_slab(cache) * prog["PAGE_SIZE"].value_()
    starts = []
    for cpu in for_each_possible_cpu(prog):
        slab = cpu_active_slab(per_cpu_ptr(cache.cpu_slab, cpu))
        if slab:
            starts.append(page_to_virt(drgn.cast("struct page *", slab)).value_())
    return [
        address
        for address in allocated_objects(prog, cache_name)
        if any(start <= address < start + span for start in starts)
    ]


def kfence_objects(prog: drgn.Program, cache_name: str) -> tuple[list[int], list[int], range]:
    """
    The KFENCE objects of *cache_name*: (addresses of the allocated ones, addresses of
    the freed ones, the pool's address range). Read from ``kfence_metadata`` entry by
    entry; entry i's page is ``__kfence_pool + (i + 1) * 2 * PAGE_SIZE``
    (mm/kfence/core.c), and the array ends where an entry's ``addr`` leaves its page.
    """
    pool = prog["__kfence_pool"].value_()
    page = prog["PAGE_SIZE"].value_()
    meta = prog["kfence_metadata"]
    cache = find_slab_cache(prog, cache_name).value_()
    allocated_state = prog.constant("KFENCE_OBJECT_ALLOCATED").value_()
    freed_state = prog.constant("KFENCE_OBJECT_FREED").value_()
    allocated, freed = [], []
    index = 0
    while True:
        entry = meta[index]
        own = pool + (index + 1) * 2 * page
        address = entry.addr.value_()
        if not own <= address < own + page:
            break
        if entry.cache.value_() == cache:
            if entry.state.value_() == allocated_state:
                allocated.append(address)
            elif entry.state.value_() == freed_state:
                freed.append(address)
        index += 1
    return sorted(allocated), sorted(freed), range(pool, pool + (index + 1) * 2 * page)


def kfence_aware_objects(prog: drgn.Program, cache_name: str) -> list[int]:
    """
    The allocated objects of *cache_name*, KFENCE's at their real address: drgn's
    enumeration takes each KFENCE page as a slab of one object at the page's start,
    allocated even once freed; those are replaced by ``kfence_metadata``'s allocated
    objects.
    """
    allocated, _, pool = kfence_objects(prog, cache_name)
    outside = [a for a in allocated_objects(prog, cache_name) if a not in pool]
    return sorted(outside + allocated)


def planted_placement(
    prog: drgn.Program, cache_name: str, magic: int | None
) -> dict[str, dict[int, int]]:
    """
    Where the allocated records of *cache_name* (those whose u16 at offset 2
    is *magic*; every allocated object when *magic* is None) lie: per CPU, in
    its active slab (``active``) and on its partial list (``cpu_partial``);
    per node, on its partial list (``node_partial``); and per CPU, the length
    of its lockless freelist being non-zero (``freelist``: 1 or 0).
    """
    from drgn.helpers.linux.cpumask import for_each_online_cpu
    from drgn.helpers.linux.list import list_for_each_entry
    from drgn.helpers.linux.mm import page_to_virt
    from drgn.helpers.linux.nodemask import for_each_online_node
    from drgn.helpers.linux.percpu import per_cpu_ptr

    cache = find_slab_cache(prog, cache_name)
    size = cache.size.value_()
    allocated = {o.value_() for o in slab_cache_for_each_allocated_object(cache, "void")}

    def planted(slab: drgn.Object) -> int:
        start = page_to_virt(drgn.cast("struct page *", slab)).value_()
        count = 0
        for address in range(start, start + size * slab.objects.value_(), size):
            if address in allocated and (
                magic is None or int.from_bytes(prog.read(address + 2, 2), "little") == magic
            ):
                count += 1
        return count

    out: dict[str, dict[int, int]] = {
        "active": {}, "cpu_partial": {}, "node_partial": {}, "freelist": {}
    }
    for cpu in for_each_online_cpu(prog):
        this = per_cpu_ptr(cache.cpu_slab, cpu)
        active = cpu_active_slab(this)
        out["active"][cpu] = planted(active) if active else 0
        out["freelist"][cpu] = int(bool(this.freelist))
        total, slab = 0, this.partial.read_()
        while slab:
            total += planted(slab)
            slab = slab.next.read_()
        out["cpu_partial"][cpu] = total
    for node in for_each_online_node(prog):
        head = cache.node[node].partial.address_of_()
        # The node lists link struct slab from 5.17, the slab's head struct page before.
        try:
            prog.type("struct slab")
            kind = "struct slab"
        except LookupError:
            kind = "struct page"
        out["node_partial"][node] = sum(
            planted(slab) for slab in list_for_each_entry(kind, head, "slab_list")
        )
    return out


# --------------------------------------------------------------------------
# Pointers: what the words of objects point at, by drgn's own helpers
# --------------------------------------------------------------------------


def with_module_symbols(prog: drgn.Program) -> drgn.Program:
    """
    *prog* with the kernel's own kallsyms first (drgn's helper; a vmlinux's
    symbol table names other aliases and local labels) and the loaded
    modules' kallsyms as symbol finders.
    """
    from drgn.helpers.linux.kallsyms import load_module_kallsyms

    if "oracle_module_kallsyms" not in prog.registered_symbol_finders():
        prog.register_symbol_finder(
            "oracle_vmlinux_kallsyms", vmlinux_kallsyms(prog), enable_index=0
        )
        prog.register_symbol_finder(
            "oracle_module_kallsyms", load_module_kallsyms(prog), enable_index=-1
        )
    return prog


def vmlinux_kallsyms(prog: drgn.Program) -> drgn.SymbolIndex:
    """
    The kernel's kallsyms decoded by drgn: from the tables VMCOREINFO names
    (Linux 6.0 on), else from where the vmlinux's own symbol table puts them
    (drgn's decoder, handed those addresses).
    """
    from _drgn import _linux_helper_load_builtin_kallsyms
    from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

    if b"SYMBOL(kallsyms_names)=" in prog["VMCOREINFO"].string_():
        return load_vmlinux_kallsyms(prog)

    def address(name: str) -> int:
        try:
            return int(prog.symbol(name).address)
        except LookupError:
            return 0

    names = ("kallsyms_names", "kallsyms_token_table", "kallsyms_token_index",
             "kallsyms_num_syms", "kallsyms_offsets", "kallsyms_relative_base",
             "kallsyms_addresses", "_stext")  # fmt: skip
    return _linux_helper_load_builtin_kallsyms(prog, *map(address, names))


def objects_with_word(prog: drgn.Program, cache_name: str, offset: int, value: int) -> int:
    """Allocated objects of *cache_name* whose 8-byte word at *offset* is *value*."""
    wanted = value.to_bytes(8, "little")
    return sum(
        prog.read(address + offset, 8) == wanted for address in allocated_objects(prog, cache_name)
    )


def word_identity(
    prog: drgn.Program, value: int, address: int, size: int, cache: dict[Any, Any]
) -> tuple[str, str | None]:
    """
    What the word *value* of the object at *address* (*size* bytes) holds,
    as (class, target), from drgn's identify_address and slab_object_info:
    the classes of docs/report-format.md's attribution.
    """
    from drgn.helpers.common.memory import identify_address
    from drgn.helpers.linux.module import address_to_module
    from drgn.helpers.linux.slab import slab_object_info

    if value == 0:
        return "null", None
    if value < 1 << 32 or value >= (1 << 64) - 4095:
        return "small integer", None
    if address <= value < address + size:
        return "self", None
    if value < 0xFFFF_8000_0000_0000:
        return "other", None
    identity = identify_address(prog, value, cache=cache)
    if identity is None:
        if prog["page_offset_base"].value_() <= value < prog["vmalloc_base"].value_():
            return "direct map", None
        return "kernel address", None
    kind, _, rest = identity.partition(": ")
    if kind in ("slab object", "free slab object"):
        return "slab", rest.rsplit("+", 1)[0]
    if kind in ("task", "task stack") or kind.startswith("task"):
        info = slab_object_info(prog, value)
        if info is not None:
            return "slab", info.slab_cache.name.string_().decode()
        return "vmalloc", None
    if kind == "vmap":
        return "vmalloc", None
    if kind == "page":
        return "vmemmap", None
    name: str | None = rest.removesuffix("+0x0")
    if name and name.startswith(".L"):
        name = None  # an assembler-local label (a vmlinux's string literal): kallsyms has none
    module = address_to_module(prog, value)
    if module:
        side = "module text" if kind == "function symbol" else "module data"
        return side, f"{module.name.string_().decode()}:{name or hex(value)}"
    text = prog.symbol("_stext").address <= value < prog.symbol("_etext").address
    return ("kernel text" if text else "kernel data"), name


def module_symbol(prog: drgn.Program, module: str, name: str) -> int:
    """The address of the symbol *name* of the loaded *module* (vmlinux may have one too)."""
    from drgn.helpers.linux.module import address_to_module

    for symbol in prog.symbols(name):
        owner = address_to_module(prog, symbol.address)
        if owner and owner.name.string_().decode() == module:
            return int(symbol.address)
    raise LookupError(f"{module} has no symbol {name}")


# Allocation tracks (slub_debug=U): who allocated each object
# --------------------------------------------------------------------------


def alloc_tracks(prog: drgn.Program, cache_name: str) -> dict[int, drgn.Object]:
    """
    Each allocated object's alloc ``struct track``, read as a drgn object where
    mm/slub.c's get_track() finds it: at object + get_info_end(s) (s->inuse, plus
    the free pointer's word when it lies outside the object).
    """
    cache = find_slab_cache(prog, cache_name)
    assert cache is not None, f"no slab cache {cache_name}"
    inuse, offset = cache.inuse.value_(), cache.offset.value_()
    info_end = inuse + 8 if offset >= inuse else inuse
    return {
        obj.value_(): drgn.Object(prog, "struct track", address=obj.value_() + info_end)
        for obj in slab_cache_for_each_allocated_object(cache, "void")
    }


def module_function_names(prog: drgn.Program) -> drgn.SymbolIndex:
    """The loaded modules' own symbols (their kallsyms in memory), by drgn's helper."""
    from drgn.helpers.linux.kallsyms import load_module_kallsyms

    return load_module_kallsyms(prog)


def module_section(prog: drgn.Program, module: str, section: str) -> tuple[int, int]:
    """
    ``[start, end)`` of a module's section by its sysfs section address
    (/sys/module/M/sections), ending at the next section above it.
    """
    from drgn.helpers.linux.module import find_module

    mod = find_module(prog, module)
    attrs = mod.sect_attrs
    addresses = {}
    for i in range(attrs.nsections.value_()):
        attr = attrs.attrs[i]
        addresses[attr.battr.attr.name.string_().decode()] = attr.address.value_()
    start = addresses[section]
    return start, min(a for a in addresses.values() if a > start)


def track_function(prog: drgn.Program, modules: drgn.SymbolIndex, address: int) -> str | None:
    """The function holding *address*: vmlinux's, else a module's; None if neither."""
    try:
        return str(prog.symbol(address).name)
    except LookupError:
        found = modules(prog, None, address, True)
        return str(found[0].name) if found else None


def uptime_seconds(prog: drgn.Program) -> float:
    """Seconds since boot by the monotonic clock's last tick (tk_core.timekeeper.tkr_mono)."""
    return float(prog["tk_core"].timekeeper.tkr_mono.base.value_() / 1e9)


def jiffies_since_boot(prog: drgn.Program, hz: int) -> int:
    """Jiffies since boot: they start at INITIAL_JIFFIES, 300 s before wrapping 32 bits."""
    return int(prog["jiffies_64"].value_() - ((-300 * hz) & 0xFFFFFFFF))


def hz(prog: drgn.Program) -> int:
    """
    HZ as the kernel's Kconfig offers it (100, 250, 300 or 1000): the one whose
    jiffies since boot best match the monotonic clock.
    """
    uptime = uptime_seconds(prog)
    return min((100, 250, 300, 1000), key=lambda h: abs(jiffies_since_boot(prog, h) / h - uptime))
