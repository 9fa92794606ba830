"""
What an 8-byte word of a slab object holds: the one classifier that pointer
attribution (:mod:`dumpminer.analysis.attribution`) and the shapes of string-less
objects (:mod:`dumpminer.analysis.shapes`) share.

A word is classified in two steps. First by value alone, vectorised over a
whole batch of objects (:func:`classify_words`): NULL, a small integer, the
object itself, or which region of the x86-64 kernel address space it falls
in: the direct map, the kernel image's text or data, a module, vmalloc
space, the ``struct page`` array (vmemmap), or none of these. The regions
are read from the kernel once (:class:`KernelRanges`): ``page_offset_base``,
``vmalloc_base`` and ``vmemmap_base`` (randomised by KASLR), ``max_pfn``,
the image's ``_stext``/``_etext``/``_text``/``_end`` symbols, and each loaded
module's own address regions, so nothing depends on one kernel's layout.

Then names, once per distinct value (:class:`WordNamer`): which slab cache a
direct-map address lies in (drgn's ``find_containing_slab_cache``, once per
page), which symbol an image or module address is in (the kernel's kallsyms,
and the modules' own, see :func:`dumpminer.dump.kallsyms.add_module_symbols`).
A word's class needs no symbol of the kernel image (:meth:`WordNamer.kind`),
so the kernel's kallsyms are only read when an image address is to be named.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt
from drgn import FaultError, Object, Program, Symbol, SymbolIndex, SymbolKind
from drgn.helpers.linux.module import for_each_module, module_address_regions
from drgn.helpers.linux.slab import find_containing_slab_cache

from dumpminer.dump.kallsyms import (
    KALLSYMS_FINDER,
    KallsymsTable,
    add_module_symbols,
    load_kallsyms,
)
from dumpminer.extract.pointers import KERNEL_SPACE_START, WORD

__all__ = [
    "ERRNO_START",
    "SMALL_LIMIT",
    "KernelRanges",
    "Region",
    "WordNamer",
    "WordTarget",
    "classify_words",
    "object_words",
]

#: Integers below this are "small": counts, lengths, flags, indexes, u32 ids.
SMALL_LIMIT = 1 << 32
#: Words from here to the top are small negative integers: -1 to -4095, the
#: kernel's errnos and ERR_PTR()s, not pointers although they lie in the
#: kernel half.
ERRNO_START = (1 << 64) - 4095
PAGE_SHIFT = 12


class Region(IntEnum):
    """What a word's value alone says it is (see :func:`classify_words`)."""

    NULL = 0
    SMALL = 1
    SELF = 2
    DIRECT_MAP = 3
    KERNEL_TEXT = 4
    KERNEL_DATA = 5
    MODULE = 6
    VMALLOC = 7
    VMEMMAP = 8
    #: In the kernel half but in no region above (poison, stale values).
    KERNEL_OTHER = 9
    #: Anything else: user-space addresses, hashes, packed fields, text.
    OTHER = 10


#: Regions whose addresses are fixed for the kernel's life: a word holding
#: one is a constant pointer to a static (a table, an ops struct, a function).
STATIC_REGIONS = (Region.KERNEL_TEXT, Region.KERNEL_DATA, Region.MODULE)


@dataclass(frozen=True)
class KernelRanges:
    """The regions of the kernel address space of one dump (all ends exclusive)."""

    direct_map: tuple[int, int]
    vmalloc: tuple[int, int]
    vmemmap: tuple[int, int]
    #: ``[_stext, _etext)``: the image's text.
    kernel_text: tuple[int, int]
    #: ``[_text, _end)``: the whole image; what is not text is data.
    kernel_image: tuple[int, int]
    #: Loaded modules' regions, sorted by start: (start, end, module name).
    modules: tuple[tuple[int, int, str], ...] = ()

    @classmethod
    def read(cls, prog: Program) -> KernelRanges:
        """Read the regions from the kernel of *prog* (vmlinux or BTF+kallsyms)."""
        page_offset = prog["page_offset_base"].value_()
        vmalloc = prog["vmalloc_base"].value_()
        vmemmap = prog["vmemmap_base"].value_()
        max_pfn = prog["max_pfn"].value_()
        page_size = prog.type("struct page").size

        def symbol(name: str) -> int:
            return int(prog.symbol(name).address)

        return cls(
            direct_map=(page_offset, page_offset + (max_pfn << PAGE_SHIFT)),
            # KASLR keeps the order direct map < vmalloc < vmemmap, with the
            # vmalloc area ending before the page array starts.
            vmalloc=(vmalloc, vmemmap),
            vmemmap=(vmemmap, vmemmap + max_pfn * page_size),
            kernel_text=(symbol("_stext"), symbol("_etext")),
            kernel_image=(symbol("_text"), symbol("_end")),
            modules=_module_regions(prog),
        )


def _module_regions(prog: Program) -> tuple[tuple[int, int, str], ...]:
    """Each loaded module's address regions, sorted (none if the list is unreadable)."""
    regions = []
    with contextlib.suppress(LookupError, FaultError, ValueError):
        for module in for_each_module(prog):
            name = module.name.string_().decode(errors="replace")
            for start, size in module_address_regions(module):
                if size:
                    regions.append((int(start), int(start) + int(size), name))
    return tuple(sorted(regions))


def object_words(rows: npt.NDArray[np.uint8], words: int | None = None) -> npt.NDArray[np.uint64]:
    """
    The aligned little-endian 8-byte words of each row (slab objects are
    8-byte aligned on x86-64): shape ``(rows, words)``, the first *words* of
    each row (default: every whole word). Bytes after the last whole word
    are left out.
    """
    width = rows.shape[1] // WORD
    if words is not None:
        width = min(width, words)
    data = np.ascontiguousarray(rows[:, : width * WORD])
    return data.view("<u8").reshape(rows.shape[0], width).astype(np.uint64, copy=False)


def _within(words: npt.NDArray[np.uint64], span: tuple[int, int]) -> npt.NDArray[np.bool_]:
    start, end = span
    return (words >= np.uint64(start)) & (words < np.uint64(end))


def classify_words(
    words: npt.NDArray[np.uint64],
    addresses: npt.NDArray[np.uint64],
    object_size: int,
    ranges: KernelRanges,
) -> npt.NDArray[np.uint8]:
    """
    The :class:`Region` of every word of *words* (one row per object, the
    object at *addresses*, *object_size* bytes long), by value alone. A word
    pointing inside its own object is SELF, whatever region it is in.
    """
    out = np.full(words.shape, Region.OTHER, dtype=np.uint8)
    kernel = (words >= np.uint64(KERNEL_SPACE_START)) & (words < np.uint64(ERRNO_START))
    out[kernel] = Region.KERNEL_OTHER
    # Later assignments win: the regions do not overlap, SELF comes last.
    out[(words < np.uint64(SMALL_LIMIT)) | (words >= np.uint64(ERRNO_START))] = Region.SMALL
    out[words == 0] = Region.NULL
    out[_within(words, ranges.direct_map)] = Region.DIRECT_MAP
    out[_within(words, ranges.vmalloc)] = Region.VMALLOC
    out[_within(words, ranges.vmemmap)] = Region.VMEMMAP
    out[_within(words, ranges.kernel_image)] = Region.KERNEL_DATA
    out[_within(words, ranges.kernel_text)] = Region.KERNEL_TEXT
    if ranges.modules:
        starts = np.array([r[0] for r in ranges.modules], dtype=np.uint64)
        ends = np.array([r[1] for r in ranges.modules], dtype=np.uint64)
        which = np.searchsorted(starts, words, side="right") - 1
        inside = (which >= 0) & (words < ends[np.maximum(which, 0)])
        out[inside] = Region.MODULE
    base = addresses.astype(np.uint64).reshape(-1, 1)
    out[(words >= base) & (words < base + np.uint64(object_size))] = Region.SELF
    return out


@dataclass(frozen=True)
class WordTarget:
    """What one word was found to hold, with names."""

    #: One of the class names of :data:`CLASS_NAMES`.
    kind: str
    #: The slab cache, symbol (``symbol+0xoff``) or ``module:symbol``; None
    #: for classes without a name (NULL, small integer, self, vmalloc, ...).
    target: str | None = None

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind} {self.target}"


#: The classes a word is reported as, after names are resolved.
CLASS_NAMES = (
    "null", "small integer", "self", "slab", "direct map", "kernel text", "kernel data",
    "module text", "module data", "vmalloc", "vmemmap", "kernel address", "other",
)  # fmt: skip

#: Classes that are pointers to something (what a ``points to`` line lists).
POINTER_CLASSES = frozenset(
    {"self", "slab", "direct map", "kernel text", "kernel data", "module text",
     "module data", "vmalloc", "vmemmap"}
)  # fmt: skip

_PLAIN = {
    Region.NULL: WordTarget("null"),
    Region.SMALL: WordTarget("small integer"),
    Region.SELF: WordTarget("self"),
    Region.VMALLOC: WordTarget("vmalloc"),
    Region.VMEMMAP: WordTarget("vmemmap"),
    Region.KERNEL_OTHER: WordTarget("kernel address"),
    Region.OTHER: WordTarget("other"),
}


@dataclass
class WordNamer:
    """
    Names for classified words, resolved once per distinct value (slab
    caches once per page): the expensive step, so it is only done on the
    bounded samples that attribution looks at.
    """

    prog: Program
    ranges: KernelRanges
    _pages: dict[int, str | None] = field(default_factory=dict)
    #: Slab cache names by ``struct kmem_cache`` address.
    _caches: dict[int, str] = field(default_factory=dict)
    _values: dict[tuple[int, int], WordTarget] = field(default_factory=dict)
    #: The kernel's kallsyms, read on first need; False: use the program's symbols.
    _kallsyms: KallsymsTable | SymbolIndex | bool | None = None

    def __post_init__(self) -> None:
        add_module_symbols(self.prog)

    def kind(self, value: int, region: int) -> str:
        """
        The class of the word *value*, of :class:`Region` *region*: the
        ``kind`` of :meth:`name`, without naming an address in the kernel
        image (whose class its region says), which would need the kernel's
        kallsyms read (about 0.06 s).
        """
        if region == Region.KERNEL_TEXT:
            return "kernel text"
        if region == Region.KERNEL_DATA:
            return "kernel data"
        return self.name(value, region).kind

    def name(self, value: int, region: int) -> WordTarget:
        """What the word *value*, of :class:`Region` *region*, holds."""
        plain = _PLAIN.get(Region(region))
        if plain is not None:
            return plain
        key = (value, region)
        found = self._values.get(key)
        if found is None:
            found = self._values[key] = self._resolve(value, Region(region))
        return found

    def _resolve(self, value: int, region: Region) -> WordTarget:
        if region == Region.DIRECT_MAP:
            cache = self._slab_cache(value)
            return WordTarget("slab", cache) if cache else WordTarget("direct map")
        symbol = self._symbol(value)
        if region == Region.MODULE:
            module = self._module(value)
            kind = "module data"
            if symbol is not None and symbol[1] == SymbolKind.FUNC:
                kind = "module text"
            name = symbol[0] if symbol is not None else f"{value:#x}"
            return WordTarget(kind, f"{module}:{name}")
        kind = "kernel text" if region == Region.KERNEL_TEXT else "kernel data"
        return WordTarget(kind, symbol[0] if symbol is not None else None)

    def _symbol(self, value: int) -> tuple[str, SymbolKind] | None:
        """
        The symbol holding *value*, as ``name`` or ``name+0xoff``. Names come
        from the kernel's own kallsyms (and the modules'), with a vmlinux
        too: a vmlinux's symbol table names other aliases (of two symbols
        at one address, each source lists its own) and assembler-local labels
        (``.LC12``, string literals), and a report must read the same with a
        vmlinux and without.
        """
        found = [s for s in self._symbols(value) if not s.name.startswith(".L")]
        if not found:
            return None
        symbol = min(found, key=lambda s: (-s.address, s.name))
        offset = value - symbol.address
        name = symbol.name if offset == 0 else f"{symbol.name}+{offset:#x}"
        return name, symbol.kind

    def _symbols(self, value: int) -> list[Symbol]:
        """The symbols holding *value*: vmlinux's from kallsyms when the dump has them."""
        image = self.ranges.kernel_image
        if not image[0] <= value < image[1]:
            return list(self.prog.symbols(value))
        if self._kallsyms is None:
            self._kallsyms = self._read_kallsyms()
        if isinstance(self._kallsyms, bool):
            return list(self.prog.symbols(value))
        try:
            return list(self._kallsyms(self.prog, None, value, False))
        except (FaultError, LookupError):
            return []  # a name in tables the dump lost: the address stays unnamed

    def _read_kallsyms(self) -> KallsymsTable | SymbolIndex | bool:
        """
        The kernel's kallsyms, with a vmlinux: read on demand where the
        vmlinux names ``kallsyms_markers``, else decoded whole by drgn;
        False when the program's symbols are kallsyms already, or the dump
        has none that can be read (before Linux 6.0: the vmlinux's symbols).
        """
        if KALLSYMS_FINDER in self.prog.enabled_symbol_finders():
            return False
        with contextlib.suppress(LookupError, FaultError, ValueError):
            return KallsymsTable.read(self.prog)
        try:
            return load_kallsyms(self.prog)
        except (LookupError, FaultError, ValueError):
            return False

    def _module(self, value: int) -> str:
        for start, end, name in self.ranges.modules:
            if start <= value < end:
                return name
        return "module"

    def _slab_cache(self, value: int) -> str | None:
        """The slab cache of the direct-map page holding *value*, or None."""
        page = value >> PAGE_SHIFT
        if page not in self._pages:
            name = None
            with contextlib.suppress(FaultError, ValueError, LookupError):
                cache = find_containing_slab_cache(self.prog, value)
                if cache:
                    name = self._cache_name(cache)
            self._pages[page] = name
        return self._pages[page]

    def _cache_name(self, cache: Object) -> str:
        """The name of the ``struct kmem_cache *`` *cache*, read once per cache."""
        address = cache.value_()
        if address not in self._caches:
            self._caches[address] = cache.name.string_().decode(errors="replace")
        return self._caches[address]


#: A shape key word that holds no pointer (see :func:`shape_key_words`).
KEY_DATA = 0
#: A shape key word that holds a pointer to memory that is not a static.
KEY_POINTER = 1


def kernel_pointer_words(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    """Which words hold a kernel-half address that is not an errno (ERR_PTR)."""
    return (words >= np.uint64(KERNEL_SPACE_START)) & (words < np.uint64(ERRNO_START))


def static_words(words: npt.NDArray[np.uint64], ranges: KernelRanges) -> npt.NDArray[np.bool_]:
    """Which words point into the kernel image or a module: constant pointers to statics."""
    static = _within(words, ranges.kernel_image)
    if ranges.modules:
        # Modules share one area: two comparisons for every word, the
        # region list only for the words inside the area's span.
        span = (ranges.modules[0][0], max(end for _, end, _ in ranges.modules))
        candidates = np.flatnonzero(_within(words, span))
        if candidates.size:
            flat = words.reshape(-1)[candidates]
            starts = np.array([r[0] for r in ranges.modules], dtype=np.uint64)
            ends = np.array([r[1] for r in ranges.modules], dtype=np.uint64)
            which = np.searchsorted(starts, flat, side="right") - 1
            inside = (which >= 0) & (flat < ends[np.maximum(which, 0)])
            static.reshape(-1)[candidates[inside]] = True
    return static


def shape_key_words(words: npt.NDArray[np.uint64], ranges: KernelRanges) -> npt.NDArray[np.uint64]:
    """
    The words of a shape key (see :mod:`dumpminer.analysis.shapes`), the coarse
    classes of :func:`classify_words`: :data:`KEY_DATA` for a word that holds
    no kernel pointer (NULL, integers, anything else), :data:`KEY_POINTER`
    for a pointer to memory that comes and goes (slab objects, the object
    itself, pages, vmalloc), and the value itself for a pointer into the
    kernel image or a module (a static, whose address never changes; no
    static lies at address 0 or 1).
    """
    pointer = kernel_pointer_words(words).astype(np.uint64)
    key: npt.NDArray[np.uint64] = np.where(static_words(words, ranges), words, pointer)
    return key
