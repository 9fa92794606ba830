"""
Walking a slab cache: every slab, read once, with its allocated objects.

drgn's :func:`~drgn.helpers.linux.slab.slab_cache_for_each_allocated_object`
visits every ``struct page`` as a drgn Object and yields one Object per slab
object. That is right, and slow when a cache holds hundreds of millions of
objects. This walker finds the same objects the same way, but in bulk:

1. The page array (vmemmap) is read in large chunks and the cache's slab pages
   are picked out with numpy: head pages that are slab pages (``PG_slab``, or
   the slab page type since 6.10) whose ``slab_cache`` is the cache.
2. Each slab is read with one read, including the context bytes around it.
3. The slab's freelist is decoded from those bytes (hardened or not) only when
   it is not empty; objects on per-CPU freelists are read CPU by CPU
   (:meth:`~dumpminer.slub.allocator.SlubAllocator.per_cpu`): a CPU whose freelist
   is broken costs its active slab, named in the report, and nothing else.

Reads go through :func:`~dumpminer.dump.kdumpread.memory_reader`: on a
kdump-compressed dump they inflate without the GIL, and then the next reads
(page-array chunks, slabs) are made on :data:`READ_THREADS` threads ahead of
the walk, in order, so that reading uses every core.

What is done with each object is not this module's business: it yields
:class:`Slab` values, and the caller slices objects out of them.
"""

from __future__ import annotations

import contextlib
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple, Never, Self, TypeVar, overload

import numpy as np
import numpy.typing as npt
from drgn import FaultError, Object, Program, Type, sizeof
from drgn.helpers.linux.mm import for_each_valid_page_range, pfn_to_virt
from drgn.helpers.linux.slab import slab_cache_objects_per_slab

from dumpminer.dump.kdumpread import MemoryReader, memory_reader
from dumpminer.errors import KernelDataError
from dumpminer.slub.allocator import ListedSlabs, slab_allocator, vmemmap
from dumpminer.slub.caches import cache_name
from dumpminer.slub.kfence import KfencePool, kfence_pool

if TYPE_CHECKING:
    from tqdm import tqdm

#: ``struct page`` entries read from the page array at once (4 MiB of 64-byte pages).
PAGE_CHUNK = 65536
#: Entries read at once when a chunk faults, to skip only what is missing.
PAGE_RETRY_CHUNK = 64
#: How many slab addresses a report names for each kind of failure.
NAMED_SLABS = 20
#: Threads reading ahead of the walk when reads release the GIL (kdump).
READ_THREADS = 2
#: Reads in flight or done ahead of the one the walk waits for.
READ_AHEAD = 8

_Item = TypeVar("_Item")
_Read = TypeVar("_Read")


@dataclass(frozen=True)
class CacheLayout:
    """How one cache lays objects out in a slab; all a slab walk needs."""

    address: int
    name: str
    #: ``s->object_size``: the bytes a caller of kmalloc may use.
    object_size: int
    #: ``s->size``: from one object to the next.
    stride: int
    #: Bytes before the first object (left red zone, with slub_debug=Z).
    red_left_pad: int
    #: Where the free pointer lives inside a free object.
    freeptr_offset: int
    #: ``s->random`` with CONFIG_SLAB_FREELIST_HARDENED, else None.
    freelist_random: int | None
    #: Addresses of objects free on per-CPU freelists and sheaves, ascending.
    cpu_free: tuple[int, ...]
    #: The most objects a slab of this cache can hold.
    objects_per_slab: int = 1 << 15
    #: Per broken CPU, what is broken and what was lost (see
    #: :meth:`~dumpminer.slub.allocator.SlubAllocator.per_cpu`).
    cpu_errors: tuple[str, ...] = ()
    #: Active slabs of CPUs whose freelist is broken: which of their objects
    #: are free is unknown, so the walk leaves them out (and says so).
    lost_slabs: frozenset[int] = frozenset()
    #: CPUs whose per-CPU area the dump lacks: the free objects on their
    #: lockless freelists are unknown and count as allocated.
    unread_cpus: tuple[int, ...] = ()
    #: Active and partial slabs of the readable CPUs.
    held_slabs: frozenset[int] = frozenset()
    #: The KFENCE pool, when the kernel has one (its pages hold one object each,
    #: at either end: see :mod:`dumpminer.slub.kfence`).
    kfence: KfencePool | None = None


#: Largest object stride believed: SLUB's largest kmalloc cache is 8 KiB on
#: 4 KiB pages; named caches go higher, but not past a few MiB.
MAX_STRIDE = 1 << 24


def cache_layout(cache: Object) -> CacheLayout:
    """
    Read the layout of the ``struct kmem_cache *`` *cache*, refusing values
    no kernel writes, which would otherwise send the walk reading gigabytes
    or dividing by zero. Raises :class:`KernelDataError`.
    """
    try:
        random: int | None = cache.random.value_()
    except AttributeError:
        random = None
    try:
        red_left_pad = cache.red_left_pad.value_()
    except AttributeError:
        red_left_pad = 0
    name = cache_name(cache)
    object_size, stride = cache.object_size.value_(), cache.size.value_()
    if not (0 < object_size <= stride <= MAX_STRIDE and 0 <= red_left_pad < stride):
        raise KernelDataError(
            f"slab cache {name} at {cache.value_():#x} is corrupt: object_size {object_size}, "
            f"size {stride}, red_left_pad {red_left_pad}"
        )
    per_cpu = slab_allocator(cache.prog_).per_cpu(cache)
    return CacheLayout(
        address=cache.value_(),
        name=name,
        object_size=object_size,
        stride=stride,
        red_left_pad=red_left_pad,
        freeptr_offset=cache.offset.value_(),
        freelist_random=random,
        cpu_free=tuple(sorted(per_cpu.free_objects)),
        objects_per_slab=_most_objects_per_slab(cache),
        cpu_errors=tuple(f"{name} {line}" for line in per_cpu.errors),
        lost_slabs=per_cpu.lost_slabs,
        unread_cpus=per_cpu.unread_cpus,
        held_slabs=per_cpu.held_slabs,
        kfence=kfence_pool(cache.prog_),
    )


def _most_objects_per_slab(cache: Object) -> int:
    """
    The most objects a slab of *cache* can hold: ``s->oo`` is the order new
    slabs get, but slabs made before an ``order`` change in sysfs keep the
    larger ``s->max``.
    """
    most = slab_cache_objects_per_slab(cache)
    with contextlib.suppress(AttributeError):
        most = max(most, cache.max.x.value_() & 0xFFFF)
    return int(most)


@dataclass(slots=True)
class Slab:
    """
    One slab of a cache, read in one piece; or, from ``walk_slabs(...,
    merge_full=True)``, a run of full slabs adjacent in memory whose objects
    follow one another at one stride.
    """

    #: Address of the ``struct slab`` (the head ``struct page``); of the
    #: first slab of a run.
    address: int
    layout: CacheLayout
    #: Address of the first object.
    base: int
    #: Objects the slab holds, free or not.
    objects: int
    #: True for each allocated object, in address order.
    allocated: npt.NDArray[np.bool_]
    #: Memory from ``base - before`` to ``base + objects * stride + after``.
    data: bytes
    before: int
    after: int

    def object_address(self, index: int) -> int:
        """The address of object *index* of this slab."""
        return self.base + index * self.layout.stride

    @property
    def full(self) -> bool:
        """True when every object of the slab is allocated."""
        # Full slabs share one cached mask; the check by value is for a mask
        # that has left the cache since.
        return self.allocated is _all_allocated(self.objects) or bool(self.allocated.all())

    @property
    def allocated_objects(self) -> int:
        """How many objects of the slab are allocated."""
        return self.objects if self.full else int(np.count_nonzero(self.allocated))


@dataclass
class WalkStats:
    """What a walk saw and could not read, for the report."""

    slabs: int = 0
    objects_scanned: int = 0
    #: Reads that failed: slabs, context windows and page-array pieces.
    faults: int = 0
    fault_slabs: list[int] = field(default_factory=list)
    corrupt_slabs: int = 0
    corrupt_slab_addresses: list[int] = field(default_factory=list)
    #: Per-CPU state that could not be read whole, by cache and CPU, with
    #: what it cost.
    cpu_errors: list[str] = field(default_factory=list)
    #: Active slabs left out because their CPU's freelist is broken.
    cpu_slabs_lost: int = 0
    #: "CACHE cpu N" of each CPU whose per-CPU area is unreadable.
    cpu_areas_unread: set[str] = field(default_factory=set)
    #: Stop signals held while the last batches were counted.
    late_signals: list[int] = field(default_factory=list)
    #: ``struct page`` entries of the page array scanned, and how many of
    #: them could not be read (a dump cut short loses the page array first).
    page_array_pages: int = 0
    page_array_unread: int = 0
    #: The lowest PFN whose ``struct page`` could not be read, if any.
    first_unread_pfn: int | None = None

    def fault(self, address: int) -> None:
        """Count one failed read at *address*."""
        self.faults += 1
        if len(self.fault_slabs) < NAMED_SLABS:
            self.fault_slabs.append(address)

    def merge(self, other: WalkStats) -> None:
        """Add what another walk (another worker's share) saw."""
        self.slabs += other.slabs
        self.objects_scanned += other.objects_scanned
        self.faults += other.faults
        self.fault_slabs = sorted(self.fault_slabs + other.fault_slabs)[:NAMED_SLABS]
        self.corrupt_slabs += other.corrupt_slabs
        merged = sorted(self.corrupt_slab_addresses + other.corrupt_slab_addresses)
        self.corrupt_slab_addresses = merged[:NAMED_SLABS]
        self.cpu_errors = sorted(set(self.cpu_errors + other.cpu_errors))
        self.cpu_slabs_lost += other.cpu_slabs_lost
        self.cpu_areas_unread |= other.cpu_areas_unread
        self.late_signals += other.late_signals
        self.page_array_pages += other.page_array_pages
        self.page_array_unread += other.page_array_unread
        unread = [p for p in (self.first_unread_pfn, other.first_unread_pfn) if p is not None]
        self.first_unread_pfn = min(unread, default=None)

    def corrupt(self, address: int) -> None:
        """Count one slab whose freelist cannot be trusted."""
        self.corrupt_slabs += 1
        if len(self.corrupt_slab_addresses) < NAMED_SLABS:
            self.corrupt_slab_addresses.append(address)


class SlabPage(NamedTuple):
    """
    A head page of a slab of one of the caches walked. A walk holds them
    as :class:`SlabPages` (columns); this tuple is made when one page is
    looked at.
    """

    address: int
    pfn: int
    cache: int
    freelist: int
    objects: int


class SlabPages(Sequence[SlabPage]):
    """
    Slab head pages (:class:`SlabPage`) held as columns: 40 bytes a page,
    where a list of tuples took 165 (for the story's 1.63 million slabs,
    62 MiB instead of 257). Indexing makes the page's tuple; slicing and
    :meth:`take` give SlabPages. Pages are in PFN order where a walk finds
    them.
    """

    __slots__ = ("address", "cache", "freelist", "objects", "pfn")

    def __init__(
        self,
        address: npt.NDArray[np.uint64],
        pfn: npt.NDArray[np.int64],
        cache: npt.NDArray[np.uint64],
        freelist: npt.NDArray[np.uint64],
        objects: npt.NDArray[np.int64],
    ) -> None:
        self.address = address
        self.pfn = pfn
        self.cache = cache
        self.freelist = freelist
        self.objects = objects

    @classmethod
    def from_pages(cls, pages: Iterable[SlabPage]) -> SlabPages:
        """The pages of *pages* (tuples), in their order."""
        rows = list(pages)
        return cls(
            np.array([p.address for p in rows], dtype=np.uint64),
            np.array([p.pfn for p in rows], dtype=np.int64),
            np.array([p.cache for p in rows], dtype=np.uint64),
            np.array([p.freelist for p in rows], dtype=np.uint64),
            np.array([p.objects for p in rows], dtype=np.int64),
        )

    @classmethod
    def concatenate(cls, parts: Sequence[SlabPages]) -> SlabPages:
        """*parts* one after the other."""
        if not parts:
            return cls.from_pages(())
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in _COLUMNS))

    def __len__(self) -> int:
        return len(self.pfn)

    @overload
    def __getitem__(self, index: int) -> SlabPage: ...

    @overload
    def __getitem__(self, index: slice) -> SlabPages: ...

    def __getitem__(self, index: int | slice) -> SlabPage | SlabPages:
        if isinstance(index, slice):
            return SlabPages(*(getattr(self, name)[index] for name in _COLUMNS))
        return SlabPage(
            int(self.address[index]),
            int(self.pfn[index]),
            int(self.cache[index]),
            int(self.freelist[index]),
            int(self.objects[index]),
        )

    def __iter__(self) -> Iterator[SlabPage]:
        for start in range(0, len(self), PAGE_CHUNK):
            part = [getattr(self, name)[start : start + PAGE_CHUNK].tolist() for name in _COLUMNS]
            yield from map(SlabPage._make, zip(*part, strict=True))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SlabPages):
            return NotImplemented
        return all(np.array_equal(getattr(self, n), getattr(other, n)) for n in _COLUMNS)

    __hash__ = None  # type: ignore[assignment]

    def take(self, indices: npt.NDArray[np.intp]) -> SlabPages:
        """The pages at *indices*, in that order."""
        return SlabPages(*(getattr(self, name)[indices] for name in _COLUMNS))

    def total_objects(self) -> int:
        """Objects in all the pages' slabs, allocated or free."""
        return int(self.objects.sum())

    def sorted_by_pfn(self) -> SlabPages:
        """The pages in PFN order."""
        return self.take(np.argsort(self.pfn, kind="stable"))


#: The columns of :class:`SlabPages`, in :class:`SlabPage`'s order.
_COLUMNS = ("address", "pfn", "cache", "freelist", "objects")


class _PageFields:
    """Byte offsets of what the page scan reads in ``struct page``/``struct slab``."""

    def __init__(self, prog: Program) -> None:
        page = prog.type("struct page")
        try:
            slab: Type = prog.type("struct slab")
        except LookupError:
            # Before Linux kernel commit d122019bf061 ("mm: Split slab into its
            # own type") (in v5.17), the slab fields were in struct page.
            slab = page
        self.size = sizeof(page)
        self.flags = _byte_offset(page, "flags")
        self.slab_cache = _byte_offset(slab, "slab_cache")
        self.freelist = _byte_offset(slab, "freelist")
        objects = slab.member("objects")
        assert objects.bit_offset is not None and objects.bit_field_size is not None
        self.objects_word = objects.bit_offset // 64 * 8
        self.objects_shift = objects.bit_offset % 64
        self.objects_mask = (1 << objects.bit_field_size) - 1
        vmcoreinfo = prog["VMCOREINFO"].string_().decode(errors="replace")
        self.slab_mapcount: int | None = None
        self.slab_flag = 0
        for line in vmcoreinfo.splitlines():
            if line.startswith("NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)="):
                # Since 6.10, a page type in _mapcount marks slab pages.
                self.slab_mapcount = int(line.split("=", 1)[1]) & 0xFFFFFFFF
                self.mapcount = _byte_offset(page, "_mapcount")
        if self.slab_mapcount is None:
            self.slab_flag = 1 << prog["PG_slab"].value_()


def _byte_offset(type_: Type, member: str) -> int:
    """Byte offset of *member* in *type_*, looking into anonymous unions."""
    bit_offset = type_.member(member).bit_offset
    assert bit_offset is not None and bit_offset % 8 == 0
    return int(bit_offset // 8)


def _column(buf: bytes, n: int, stride: int, offset: int, dtype: str) -> npt.NDArray[np.uint64]:
    """One field of *n* structs of *stride* bytes in *buf*, as an array."""
    return np.ndarray(shape=(n,), dtype=dtype, buffer=buf, offset=offset, strides=(stride,))


def find_slab_pages(
    prog: Program, cache_addresses: set[int], stats: WalkStats, progress: bool = False
) -> SlabPages:
    """
    Read the whole page array in chunks and return the head pages of the
    slabs of the caches at *cache_addresses*, in PFN order. With *progress*,
    a bar on stderr counts pages: on a machine with terabytes of memory the
    page array alone is gigabytes.
    """
    fields = _PageFields(prog)
    reader = memory_reader(prog)
    wanted = np.array(sorted(cache_addresses), dtype=np.uint64)
    found: list[SlabPages] = []
    ranges = _page_ranges(prog)
    chunks = [
        (page0, lo, min(end_pfn, lo + PAGE_CHUNK))
        for start_pfn, end_pfn, page0 in ranges
        for lo in range(start_pfn, end_pfn, PAGE_CHUNK)
    ]

    def fetch(chunk: tuple[int, int, int]) -> bytes | None:
        page0, lo, hi = chunk
        try:
            return reader.read(page0 + lo * fields.size, (hi - lo) * fields.size)
        except FaultError:
            return None  # read again, in pieces, by _scan_page_chunk

    with progress_bar(
        progress, sum(end - start for start, end, _ in ranges), "page", "finding slabs"
    ) as bar:
        for (page0, lo, hi), buf in read_ahead(fetch, chunks, reader.parallel):
            found.append(_scan_page_chunk(prog, fields, page0, lo, hi, wanted, stats, buf))
            stats.page_array_pages += hi - lo
            bar.update(hi - lo)
    return SlabPages.concatenate(found)


class _NoBar:
    """The progress bar of a quiet run: it counts nothing and draws nothing."""

    def update(self, n: int = 1) -> None:
        """Nothing to count."""

    def close(self) -> None:
        """Nothing to clear."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(progress: bool, total: int, unit: str, desc: str) -> tqdm[Never] | _NoBar:
    """
    A bar on stderr counting *total* units, cleared when closed; with
    *progress* false, one that draws nothing. tqdm is imported only to draw
    a bar: importing it takes about 0.015 s of a quiet run's start-up.
    """
    if not progress:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, leave=False)


def read_ahead(
    fetch: Callable[[_Item], _Read], items: list[_Item], parallel: bool
) -> Iterator[tuple[_Item, _Read]]:
    """
    ``(item, fetch(item))`` for each of *items*, in order. With *parallel*
    (reads that release the GIL), up to :data:`READ_AHEAD` items are fetched
    ahead on :data:`READ_THREADS` threads while the caller works on the
    current one; else each is fetched when the caller gets to it.
    """
    if not parallel or len(items) < 2:
        for item in items:
            yield item, fetch(item)
        return
    pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="dumpminer-read")
    pending: deque[tuple[_Item, Future[_Read]]] = deque()
    try:
        ahead = iter(items)
        for item in ahead:
            pending.append((item, pool.submit(fetch, item)))
            if len(pending) > READ_AHEAD:
                break
        while pending:
            item, future = pending.popleft()
            result = future.result()
            for more in ahead:
                pending.append((more, pool.submit(fetch, more)))
                break
            yield item, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _page_ranges(prog: Program) -> list[tuple[int, int, int]]:
    """
    ``(first PFN, end PFN, address of struct page 0)`` of each range of valid
    PFNs. The ranges come from the memory sections (``mem_section``), which
    memblock allocates at the top of memory, next to the page array: when a
    dump cut short lost them, the one range ``[0, max_pfn)`` of the virtual
    page array is scanned instead, and what is missing faults.
    """
    try:
        return [
            (start, end, mem_map.value_())
            for start, end, mem_map in for_each_valid_page_range(prog)
        ]
    except (FaultError, LookupError):
        # LookupError: a damaged VMCOREINFO can leave drgn without ``vmemmap``;
        # vmemmap() then tries ``vmemmap_base``, or says in one line (exit 9).
        try:
            max_pfn = prog["max_pfn"].value_()
        except (FaultError, LookupError) as e:
            raise KernelDataError(f"the number of pages is unreadable: {e}") from e
        return [(0, max_pfn, vmemmap(prog))]


def _scan_page_chunk(
    prog: Program,
    fields: _PageFields,
    page0: int,
    lo: int,
    hi: int,
    wanted: npt.NDArray[np.uint64],
    stats: WalkStats,
    buf: bytes | None = None,
) -> SlabPages:
    """
    Pick the wanted slab head pages out of ``struct page`` [lo, hi), whose
    bytes are *buf* if they were read already.
    """
    try:
        if buf is None:
            buf = memory_reader(prog).read(page0 + lo * fields.size, (hi - lo) * fields.size)
    except FaultError:
        if hi - lo <= PAGE_RETRY_CHUNK:
            stats.fault(page0 + lo * fields.size)
            stats.page_array_unread += hi - lo
            if stats.first_unread_pfn is None or lo < stats.first_unread_pfn:
                stats.first_unread_pfn = lo
            return SlabPages.from_pages(())
        return SlabPages.concatenate(
            [
                _scan_page_chunk(
                    prog, fields, page0, sub, min(hi, sub + PAGE_RETRY_CHUNK), wanted, stats
                )
                for sub in range(lo, hi, PAGE_RETRY_CHUNK)
            ]
        )
    n = hi - lo
    if fields.slab_mapcount is not None:
        mapcount = _column(buf, n, fields.size, fields.mapcount, "<u4")
        is_slab = mapcount == fields.slab_mapcount
    else:
        flags = _column(buf, n, fields.size, fields.flags, "<u8")
        is_slab = (flags & np.uint64(fields.slab_flag)) != 0
    caches = _column(buf, n, fields.size, fields.slab_cache, "<u8")
    hits = np.flatnonzero(is_slab & np.isin(caches, wanted))
    freelist = _column(buf, n, fields.size, fields.freelist, "<u8")[hits]
    counters = _column(buf, n, fields.size, fields.objects_word, "<u8")[hits]
    objects = (counters >> np.uint64(fields.objects_shift)) & np.uint64(fields.objects_mask)
    pfns = (hits + lo).astype(np.int64)
    addresses = np.uint64(page0) + pfns.astype(np.uint64) * np.uint64(fields.size)
    # Indexing with hits copies: the pages keep nothing of the chunk's buffer.
    return SlabPages(addresses, pfns, caches[hits], freelist, objects.astype(np.int64))


def listed_slab_pages(
    prog: Program, caches: list[Object], stats: WalkStats
) -> tuple[SlabPages, list[ListedSlabs]]:
    """
    The head pages of the slabs that *caches*' own lists name (per-CPU slabs,
    per-node partial and full lists: what crash's ``kmem -S`` shows), each
    ``struct slab`` read on its own, in PFN order; and the lists themselves.
    This reaches slabs without scanning the page array, for a dump that lost
    part of it. Unreadable ``struct slab`` entries are counted in *stats*.
    """
    allocator = slab_allocator(prog)
    fields = _PageFields(prog)
    wanted = np.array(sorted(cache.value_() for cache in caches), dtype=np.uint64)
    listed = [allocator.listed_slabs(cache) for cache in caches]
    found: dict[int, SlabPage] = {}
    page0 = vmemmap(prog)
    for address in sorted(set().union(*(slabs.all for slabs in listed))):
        pfn = (address - page0) // fields.size
        for page in _scan_page_chunk(prog, fields, page0, pfn, pfn + 1, wanted, stats):
            found[page.address] = page
    return SlabPages.from_pages(sorted(found.values(), key=lambda page: page.pfn)), listed


def cpu_slab_pages(prog: Program, caches: list[Object]) -> SlabPages:
    """
    Each CPU's active slab of *caches* as a :class:`SlabPage` built without
    its ``struct slab``: the PFN from the slab's place in the page array, the
    freelist from the CPU's, the object count from the cache's slab order.
    For a dump whose page array is lost; :func:`read_slab` then reads the
    objects through the direct map. Objects freed by other CPUs onto the
    slab's own freelist (kept in the lost ``struct slab``) count as allocated.
    """
    allocator = slab_allocator(prog)
    size = sizeof(prog.type("struct page"))
    page0 = vmemmap(prog)
    pages = []
    for cache in caches:
        objects = slab_cache_objects_per_slab(cache)
        for address, freelist in allocator.cpu_active_slabs(cache):
            pfn = (address - page0) // size
            pages.append(SlabPage(address, pfn, cache.value_(), freelist, objects))
    return SlabPages.from_pages(sorted(pages, key=lambda page: page.pfn))


class _FreelistDecoder:
    """
    Follows a slab's freelist inside the slab's own bytes. Without
    CONFIG_SLAB_FREELIST_HARDENED each free pointer is stored as it is. With
    it, since Linux kernel commit 2482ddec670f ("mm: add SLUB free list
    pointer obfuscation") (in v4.14), as ``ptr ^ s->random ^ &ptr``, and
    since commit 1ad53d9fa3f6 ("slub: improve bit diffusion for freelist ptr
    obfuscation") (in v5.7, and backported to older stable branches) as
    ``ptr ^ s->random ^ swab(&ptr)``. No field tells the two apart: the first
    non-empty freelist decides, the way whose pointer lands in the slab, as
    drgn does (tests/test_slablayouts.py builds both on bytes).
    """

    def __init__(self) -> None:
        self.swab: bool | None = None

    @staticmethod
    def _swab(value: int) -> int:
        return int.from_bytes(value.to_bytes(8, "little"), "big")

    def _decode(self, raw: int, where: int, random: int, swab: bool) -> int:
        return raw ^ random ^ (self._swab(where) if swab else where)

    def free_indices(self, slab: Slab, head: int) -> set[int] | None:
        """
        Indices of the free objects on the freelist starting at *head*, or
        None if the freelist leaves the slab, is misaligned or loops.
        """
        layout = slab.layout
        end = slab.base + slab.objects * layout.stride
        free: set[int] = set()
        ptr = head
        while ptr:
            index, misaligned = divmod(ptr - slab.base, layout.stride)
            if ptr < slab.base or ptr >= end or misaligned or index in free:
                return None
            free.add(index)
            where = ptr + layout.freeptr_offset
            pos = where - slab.base + slab.before
            raw = int.from_bytes(slab.data[pos : pos + 8], "little")
            if layout.freelist_random is None:
                ptr = raw
            elif self.swab is None:
                ptr = self._choose(
                    raw, where, layout.freelist_random, slab.base, end, layout.stride
                )
            else:
                ptr = self._decode(raw, where, layout.freelist_random, self.swab)
        return free

    def _choose(self, raw: int, where: int, random: int, base: int, end: int, stride: int) -> int:
        """Decode one pointer both ways and keep the way that lands in the slab."""
        for swab in (True, False):
            ptr = self._decode(raw, where, random, swab)
            if ptr == 0 or (base <= ptr < end and (ptr - base) % stride == 0):
                if ptr:
                    self.swab = swab
                return ptr
        return self._decode(raw, where, random, True)


def read_slab(
    prog: Program,
    page: SlabPage,
    layout: CacheLayout,
    virt: int,
    before: int,
    after: int,
    decoder: _FreelistDecoder,
    stats: WalkStats,
    data: bytes | None = None,
) -> Slab | None:
    """
    Read the slab whose head page is *page* and work out which of its objects
    are allocated. *data* is the slab's bytes with their context, if they
    were read ahead (see :func:`_slab_extent`). Returns None, and counts why,
    when the slab is unreadable or its freelist is corrupt.
    """
    if layout.kfence is not None and layout.kfence.contains(virt):
        return _read_kfence_slab(prog, page, layout, layout.kfence, virt, before, after, stats)
    if page.objects > layout.objects_per_slab:
        # A struct slab claiming more objects than the cache fits in a slab
        # is corrupt; trusting it would read (and mine) past the slab.
        stats.corrupt(page.address)
        return None
    base = virt + layout.red_left_pad
    length = page.objects * layout.stride
    reader = memory_reader(prog)
    try:
        if data is None:
            data = reader.read(base - before, before + length + after)
    except FaultError:
        try:
            data = reader.read(base, length)
        except FaultError:
            stats.fault(page.address)
            return None
        if before or after:
            stats.fault(page.address)
            data = bytes(before) + data + bytes(after)
    slab = Slab(
        address=page.address,
        layout=layout,
        base=base,
        objects=page.objects,
        allocated=_all_allocated(page.objects),
        data=data,
        before=before,
        after=after,
    )
    free: set[int] = set()
    if page.freelist:
        on_freelist = decoder.free_indices(slab, page.freelist)
        if on_freelist is None:
            stats.corrupt(page.address)
            return None
        free = on_freelist
    # cpu_free is sorted: find this slab's share by bisection, not by a scan
    # per slab (with sheaves, since 6.18, it can hold thousands).
    cpu_free = layout.cpu_free
    first = bisect_left(cpu_free, base)
    if first < len(cpu_free) and cpu_free[first] < base + length:
        on_cpus = cpu_free[first : bisect_left(cpu_free, base + length)]
        free.update((ptr - base) // layout.stride for ptr in on_cpus)
    if free:
        slab.allocated = np.ones(page.objects, dtype=bool)
        slab.allocated[list(free)] = False
    return slab


def _read_kfence_slab(
    prog: Program,
    page: SlabPage,
    layout: CacheLayout,
    pool: KfencePool,
    virt: int,
    before: int,
    after: int,
    stats: WalkStats,
) -> Slab | None:
    """
    The one object of a KFENCE page, at the address its ``kfence_metadata``
    gives (either end of the page), when the metadata says it is allocated (a
    freed KFENCE object keeps its page's cache and an empty freelist). None
    for a freed object, another cache's, an unused page, or bad metadata.
    """
    obj = pool.objects.get(virt)
    if obj is None:
        if virt in pool.bad_pages:
            stats.corrupt(page.address)
        return None
    if obj.cache != layout.address or not obj.allocated:
        # A freed object's page is protected (unmapped): there is nothing to read.
        return None
    # Only the object's own page is mapped: the guard pages around it are not,
    # and bytes of the object's stride or context past the page read as zeros.
    start, end = obj.address - before, obj.address + layout.stride + after
    lo, hi = max(start, virt), min(end, virt + pool.page_size)
    try:
        inside = memory_reader(prog).read(lo, hi - lo) if hi > lo else b""
    except FaultError:
        stats.fault(page.address)
        return None
    data = bytes(lo - start) + inside + bytes(end - hi)
    return Slab(
        address=page.address,
        layout=layout,
        base=obj.address,
        objects=1,
        allocated=np.array([obj.allocated]),
        data=data,
        before=before,
        after=after,
    )


def _unheld_frozen_slabs(
    prog: Program, pages: SlabPages, layouts: dict[int, CacheLayout], stats: WalkStats
) -> list[int]:
    """
    For a cache some of whose CPUs' per-CPU areas the dump lacks: its frozen
    slabs that no readable CPU holds. One of them is such a CPU's active
    slab, whose free objects are on the lost lockless freelist; which one is
    unknown, so all are left out of the walk (the others are that CPU's
    partial slabs before 6.8), and the report names them.
    """
    allocator = slab_allocator(prog)
    lost: list[int] = []
    for layout in layouts.values():
        if not layout.unread_cpus:
            continue
        mine = pages.take(np.flatnonzero(pages.cache == np.uint64(layout.address)))
        frozen = [
            page for page in mine
            if page.address not in layout.held_slabs and allocator.frozen(page.address)
        ]
        lost += [page.address for page in frozen]
        cpus = ", ".join(str(cpu) for cpu in layout.unread_cpus)
        # One line per slab: workers walking parts of the cache each name theirs.
        for page in frozen[:NAMED_SLABS]:
            message = (
                f"{layout.name} cpu {cpus}: per-CPU area unreadable: frozen slab "
                f"{page.address:#x} ({page.objects} objects), which no readable CPU holds, "
                "is left out of the walk"
            )
            if message not in stats.cpu_errors:
                stats.cpu_errors.append(message)
    return lost


@lru_cache(maxsize=64)
def _all_allocated(objects: int) -> npt.NDArray[np.bool_]:
    """A read-only all-true mask: a full slab's (most slabs of a leaking cache)."""
    mask = np.ones(objects, dtype=bool)
    mask.flags.writeable = False
    return mask


def walk_slabs(
    prog: Program,
    caches: list[Object],
    before: int = 0,
    after: int = 0,
    stats: WalkStats | None = None,
    pages: SlabPages | None = None,
    merge_full: bool = False,
) -> Iterator[Slab]:
    """
    Yield every readable slab of *caches*, in PFN order, with *before* and
    *after* bytes of context around its objects. Unreadable and corrupt slabs
    are counted in *stats* and skipped. *pages* (from :func:`find_slab_pages`)
    may be given to walk a part of the caches, as parallel workers do.

    With *merge_full* (and no context), runs of full slabs adjacent in memory
    (see :func:`_full_runs`) are read with one read each and yielded as one
    :class:`Slab` holding all their objects: the same objects at the same
    addresses, without a read and a Python object per slab.
    """
    stats = stats if stats is not None else WalkStats()
    layouts = {cache.value_(): cache_layout(cache) for cache in caches}
    for layout in layouts.values():
        for message in layout.cpu_errors:
            if message not in stats.cpu_errors:
                stats.cpu_errors.append(message)
        stats.cpu_areas_unread.update(f"{layout.name} cpu {cpu}" for cpu in layout.unread_cpus)
    if pages is None:
        pages = find_slab_pages(prog, set(layouts), stats)
    lost = [address for layout in layouts.values() for address in layout.lost_slabs]
    lost += _unheld_frozen_slabs(prog, pages, layouts, stats)
    if lost:
        # Active slabs of CPUs whose freelist is broken: their free objects are
        # unknown, and counting them as allocated would mine freed bytes.
        keep = ~np.isin(pages.address, np.array(lost, dtype=np.uint64))
        stats.cpu_slabs_lost += int(len(pages) - keep.sum())
        pages = pages.take(np.flatnonzero(keep))
    page_shift = prog["PAGE_SHIFT"].value_()
    virt0 = pfn_to_virt(prog, 0).value_()
    decoder = _FreelistDecoder()
    reader = memory_reader(prog)
    runs: dict[int, int] = {}
    if merge_full and not (before or after):
        runs = _full_runs(pages, layouts, page_shift, virt0, _merged_bytes(reader))
    # (first page, slabs): a run of full slabs read as one, or one slab.
    # Reads are handed to the reading threads in groups of about
    # _merged_bytes(reader): slab by slab (sampling, context windows), one
    # task per slab would cost more than the read.
    groups: list[list[tuple[int, int]]] = [[]]
    budget = _merged_bytes(reader)
    group_bytes = 0
    i = 0
    while i < len(pages):
        count = runs.get(i, 1)
        size = pages[i].objects * layouts[pages[i].cache].stride * count + before + after
        if groups[-1] and group_bytes + size > budget:
            groups.append([])
            group_bytes = 0
        groups[-1].append((i, count))
        group_bytes += size
        i += count

    def fetch(group: list[tuple[int, int]]) -> list[bytes | None]:
        out = []
        for first, count in group:
            page = pages[first]
            extent = _slab_extent(page, layouts[page.cache], count,
                                  virt0 + (page.pfn << page_shift), before, after)  # fmt: skip
            out.append(_read_extent(reader, extent))
        return out

    for group, read in read_ahead(fetch, groups if pages else [], reader.parallel):
        yield from _walk_group(
            prog, pages, layouts, group, read, (page_shift, virt0, before, after), decoder, stats
        )


def _walk_group(
    prog: Program,
    pages: SlabPages,
    layouts: dict[int, CacheLayout],
    group: list[tuple[int, int]],
    read: list[bytes | None],
    where: tuple[int, int, int, int],
    decoder: _FreelistDecoder,
    stats: WalkStats,
) -> Iterator[Slab]:
    """
    The slabs of one group of reads of :func:`walk_slabs`, with their bytes
    *read*; *where* is (PAGE_SHIFT, the direct map's address of PFN 0, bytes
    of context before and after each object).
    """
    page_shift, virt0, before, after = where
    for (i, count), data in zip(group, read, strict=True):
        page = pages[i]
        layout = layouts[page.cache]
        virt = virt0 + (page.pfn << page_shift)
        if count > 1:
            merged = _read_full_run(prog, page, layout, virt, count, data)
            if merged is not None:
                stats.slabs += count
                stats.objects_scanned += merged.objects
                yield merged
                continue
            # A page of the run is missing: its slabs are read one by one.
            data = None
        for j in range(i, i + count):
            page = pages[j]
            virt = virt0 + (page.pfn << page_shift)
            slab = read_slab(prog, page, layout, virt, before, after, decoder, stats, data)
            if slab is not None:
                stats.slabs += 1
                stats.objects_scanned += slab.allocated_objects
                yield slab


def _slab_extent(
    page: SlabPage, layout: CacheLayout, count: int, virt: int, before: int, after: int
) -> tuple[int, int] | None:
    """
    ``(address, size)`` of what :func:`read_slab` (one slab) or
    :func:`_read_full_run` (*count* slabs) reads first, or None for a slab
    that will be found corrupt without a read.
    """
    if count > 1:
        return virt, count * layout.objects_per_slab * layout.stride
    if page.objects > layout.objects_per_slab:
        return None
    base = virt + layout.red_left_pad
    return base - before, before + page.objects * layout.stride + after


def _read_extent(reader: MemoryReader, extent: tuple[int, int] | None) -> bytes | None:
    """The bytes of *extent*, or None when they fault (the walk then reads again)."""
    if extent is None:
        return None
    try:
        return reader.read(*extent)
    except FaultError:
        return None


def _merged_bytes(reader: MemoryReader) -> int:
    """Most bytes one read of a run of full slabs takes."""
    return MERGED_BYTES_PARALLEL if reader.parallel else MERGED_BYTES


#: Most bytes one merged read of full slabs takes: drgn holds the GIL through
#: a read, and the counting threads need it between batches.
MERGED_BYTES = 256 << 10
#: The same, with reads that release the GIL (kdump): fewer, larger reads.
MERGED_BYTES_PARALLEL = 1 << 20


def _full_runs(
    pages: SlabPages,
    layouts: dict[int, CacheLayout],
    page_shift: int,
    virt0: int,
    merged_bytes: int = MERGED_BYTES,
) -> dict[int, int]:
    """
    Runs of slabs that can be read with one read and mined as one array of
    objects: adjacent in memory, of one cache whose objects fill its slabs
    exactly (as every power-of-two kmalloc cache does), full (empty freelist),
    and with no object free on a CPU. Returns {index of the first page: slabs}
    for runs of two slabs or more. In a leaking cache, these are most slabs.
    """
    n = len(pages)
    if n < 2:
        return {}
    pfn, cache, objects, freelist = pages.pfn, pages.cache, pages.objects, pages.freelist
    base = np.uint64(virt0) + (pfn.astype(np.uint64) << np.uint64(page_shift))
    # Pages spanned by each slab that may join a run; 0 for the others.
    span = np.zeros(n, dtype=np.int64)
    for address, layout in layouts.items():
        size = layout.objects_per_slab * layout.stride
        if layout.red_left_pad or size % (1 << page_shift):
            continue
        ok = (cache == np.uint64(address)) & (objects == layout.objects_per_slab) & (freelist == 0)
        cpu = np.array(layout.cpu_free, dtype=np.uint64)
        if len(cpu):
            first = np.searchsorted(cpu, base)
            ok &= np.searchsorted(cpu, base + np.uint64(size)) == first
        span[ok] = size >> page_shift
    # joins[i]: slab i + 1 continues slab i's run.
    joins = (span[1:] > 0) & (span[:-1] > 0) & (cache[1:] == cache[:-1])
    joins &= pfn[1:] == pfn[:-1] + span[:-1]
    limit = np.maximum(2, (merged_bytes >> page_shift) // np.maximum(span, 1)).tolist()
    runs: dict[int, int] = {}
    start = 0
    for i, joined in enumerate(joins.tolist()):
        if not joined or i + 1 - start >= limit[start]:
            if i + 1 - start > 1:
                runs[start] = i + 1 - start
            start = i + 1
    if n - start > 1:
        runs[start] = n - start
    return runs


def _read_full_run(
    prog: Program,
    page: SlabPage,
    layout: CacheLayout,
    base: int,
    count: int,
    data: bytes | None = None,
) -> Slab | None:
    """
    Read *count* full slabs adjacent in memory from the one at *page* as one
    :class:`Slab` of all their objects (*data*, if read ahead); None if any
    of their memory faults.
    """
    objects = count * layout.objects_per_slab
    if data is None:
        data = _read_extent(memory_reader(prog), (base, objects * layout.stride))
        if data is None:
            return None
    return Slab(
        address=page.address,
        layout=layout,
        base=base,
        objects=objects,
        allocated=_all_allocated(objects),
        data=data,
        before=0,
        after=0,
    )
