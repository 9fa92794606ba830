"""
Allocation call sites: who allocated the objects of a cache, and when.

With ``slub_debug=U`` (or ``SLAB_STORE_USER`` in a cache's flags) SLUB keeps
two ``struct track`` behind every object: the last allocation's and the last
free's. The alloc track holds the caller's return address (``addr``), the
stack depot handle of the whole stack (``handle``, with
``CONFIG_STACKDEPOT``), the CPU and pid, and ``when`` in jiffies. The alloc
track starts at ``object + info_end``: ``info_end`` is ``s->inuse``, plus a
word when the free pointer lies after the object (``s->offset >=
s->inuse``). Since 6.1 a kmalloc cache with tracks also keeps the size the
caller asked for, a u32 ``orig_size``, after the two tracks. All offsets and
sizes here come from the kernel's own types (``struct track``) and cache
fields; only the flag bits of the kernels before the slab flags became an
enum (6.9) are constants. The engine's rows start at the object (after the
left red zone of ``slub_debug=Z``), so a row holds its track.

How the counts are made, and why they are exact:

- :class:`CallSiteObserver` is an :class:`~dumpminer.extract.observers.ObjectObserver`:
  it decodes the track of every allocated object of the one walk, array
  column by array column, and counts objects per call site (``addr``,
  ``handle``), with the pids, CPUs, ages and requested sizes seen. Nothing
  is read twice, and caches without tracks get no observer at all
  (:func:`tracked_caches` decides before the walk), so they cost nothing.
- Clusters are made after the walk, so an observer cannot count per
  cluster. It is also a :class:`~dumpminer.extract.observers.RowLabeller`: it gives
  the engine each row's call site, the fragment scan then counts objects per
  (fragment text, call site) in the same pass (the pair count that sampling
  uses per slab), and the tally keeps those triples through its folds and
  drops (:meth:`~dumpminer.clustering.tally.FragmentTally.cluster_labels`). A
  cluster's call-site counts are therefore as exact as the cluster's own
  count: they add up to it, exactly while the tally is exact. Memory is one
  triple per distinct (text, call site), summed now and then; a leak's texts
  come from one or two sites, so that is about the tally's own size.
- Stacks are decoded once per distinct handle (:mod:`dumpminer.analysis.stackdepot`),
  and addresses are named once each, after the walk.

Ages are ``(jiffies - when) / HZ`` at the time of the dump, from the dump's
own ``jiffies_64`` and an HZ derived from ``tick_nsec`` (the kernel's
nanoseconds per tick), never assumed. A module's ``__init`` functions are
freed once it is loaded, so their addresses no longer have a symbol; they
are named ``module:<init text>+0xoff`` from the module's section addresses
(``mod->sect_attrs``), which the kernel keeps.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from drgn import FaultError, Object, Program, offsetof, sizeof
from drgn.helpers.linux.module import for_each_module, module_address_regions
from drgn.helpers.linux.slab import slab_object_info

from dumpminer.analysis.shapes import ShapeSummary
from dumpminer.analysis.stackdepot import StackDepot, stack_depot
from dumpminer.dump.kallsyms import add_module_symbols
from dumpminer.dump.kernel import kernel_release, kernel_version
from dumpminer.extract.observers import ObjectBatch, RowLabels
from dumpminer.slub.caches import cache_name
from dumpminer.slub.flags import slab_flag

__all__ = [
    "CacheCallSites",
    "CallSite",
    "CallSiteObserver",
    "CallSiteReport",
    "ClusterCallSites",
    "Stack",
    "TrackLayout",
    "call_site_report",
    "kernel_hz",
    "track_layout",
    "tracked_caches",
]

#: Call sites listed per cache, per cluster, and stacks per call site.
SITES_SHOWN = 10
CLUSTER_SITES_SHOWN = 3
STACKS_SHOWN = 3
#: Clusters (the first, most objects) whose sites get their stack: each stack
#: costs a symbol lookup per frame, and the noise clusters have many.
CLUSTER_STACKS = 50
#: Pids, CPUs and requested sizes listed per call site.
VALUES_SHOWN = 5
#: Pieces of (site, cpu, pid) counts kept before they are summed.
_REDUCE_ENTRIES = 1 << 20


@dataclass(frozen=True)
class TrackLayout:
    """Where a cache keeps each object's alloc track, in a row of the engine."""

    cache: int
    name: str
    #: Offset of the alloc track from the object's first byte (``info_end``).
    offset: int
    #: Offsets of the fields inside ``struct track`` (handle: None without
    #: CONFIG_STACKDEPOT) and of the requested size (None when not kept).
    addr: int
    handle: int | None
    cpu: int
    pid: int
    when: int
    orig_size: int | None


def track_layout(cache: Object) -> TrackLayout | None:
    """
    The alloc track layout of the ``struct kmem_cache *`` *cache*, or None
    when it keeps no tracks (no ``SLAB_STORE_USER``) or they would not fit.
    """
    prog = cache.prog_
    flags = cache.flags.value_()
    if not flags & slab_flag(prog, "SLAB_STORE_USER"):
        return None
    track = prog.type("struct track")
    inuse, free_at = cache.inuse.value_(), cache.offset.value_()
    info_end = inuse + sizeof(prog.type("void *")) if free_at >= inuse else inuse
    stride = cache.size.value_()
    try:
        red_left_pad = cache.red_left_pad.value_()
    except AttributeError:
        red_left_pad = 0
    # The row holds the stride from the object on; the tracks must be in it.
    if info_end + 2 * sizeof(track) > stride - red_left_pad:
        return None
    orig_size = None
    if flags & slab_flag(prog, "SLAB_KMALLOC") and kernel_version(kernel_release(prog)) >= (6, 1):
        at = info_end + 2 * sizeof(track)
        orig_size = at if at + 4 <= stride - red_left_pad else None
    handle = None
    with contextlib.suppress(LookupError):
        handle = offsetof(track, "handle")
    return TrackLayout(
        cache=cache.value_(),
        name=cache_name(cache),
        offset=info_end,
        addr=offsetof(track, "addr"),
        handle=handle,
        cpu=offsetof(track, "cpu"),
        pid=offsetof(track, "pid"),
        when=offsetof(track, "when"),
        orig_size=orig_size,
    )


def tracked_caches(caches: Sequence[Object]) -> list[TrackLayout]:
    """The track layouts of the *caches* that keep alloc tracks."""
    return [layout for cache in caches if (layout := track_layout(cache)) is not None]


def kernel_hz(prog: Program) -> int | None:
    """
    The kernel's HZ: from ``tick_nsec`` (``(NSEC_PER_SEC + HZ / 2) / HZ``),
    else ``CONFIG_HZ`` of an embedded kconfig; None when neither is there.
    """
    try:
        tick_nsec = prog.read_u64(prog.symbol("tick_nsec").address)
        if tick_nsec:
            return round(1_000_000_000 / int(tick_nsec))
    except (LookupError, FaultError):
        pass
    try:
        from drgn.helpers.linux.kconfig import get_kconfig

        return int(get_kconfig(prog)["CONFIG_HZ"])
    except (LookupError, ValueError, FaultError):
        return None


def kernel_jiffies(prog: Program) -> int | None:
    """``jiffies_64`` at the time of the dump, or None if it cannot be read."""
    try:
        return int(prog.read_u64(prog.symbol("jiffies_64").address))
    except (LookupError, FaultError):
        return None


def initial_jiffies(hz: int) -> int:
    """``INITIAL_JIFFIES``: jiffies start 300 s before wrapping 32 bits, to catch bugs."""
    return (-300 * hz) & 0xFFFFFFFF


# --- The observer ----------------------------------------------------------------


def _column(rows: npt.NDArray[np.uint8], at: int, dtype: str) -> npt.NDArray[Any]:
    """
    One little-endian field at byte *at* of every row, as a strided view of
    the rows (no copy: a copy of a narrow column of wide rows costs more
    than the work on it).
    """
    if not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows)
    return np.ndarray((len(rows),), dtype, rows, at, (rows.shape[1],))


def _runs(values: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """
    Where each run of equal neighbours starts in *values*, and its length.
    Neighbouring objects mostly come from one call site, so a batch of
    hundreds of thousands of tracks is a few runs: counting runs instead of
    sorting every row keeps the observer cheap.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.flatnonzero(values[1:] != values[:-1]) + 1])
    return starts, np.diff(np.append(starts, n))


@dataclass
class _Partial:
    """What one batch's tracks hold, per call site of the batch (local labels)."""

    cache: int
    keys: list[tuple[int, int]]
    labels: npt.NDArray[np.int64]
    objects: npt.NDArray[np.int64]
    when_min: npt.NDArray[np.uint64]
    when_max: npt.NDArray[np.uint64]
    #: (label, cpu, pid, objects) and (label, orig_size, objects).
    who: tuple[npt.NDArray[np.int64], ...]
    sizes: tuple[npt.NDArray[np.int64], ...] | None


@dataclass
class _SiteTotals:
    """One call site (cache, addr, handle) over the walk."""

    objects: int = 0
    when_min: int = 2**64 - 1
    when_max: int = 0


@dataclass
class _CacheTotals:
    """Counts per call site of one cache."""

    sites: dict[tuple[int, int], _SiteTotals] = field(default_factory=dict)
    #: Pieces of (site id, cpu, pid, objects) and (site id, orig_size, objects).
    who: list[tuple[npt.NDArray[np.int64], ...]] = field(default_factory=list)
    sizes: list[tuple[npt.NDArray[np.int64], ...]] = field(default_factory=list)
    entries: int = 0
    #: Site ids, in the order of the ids.
    ids: dict[tuple[int, int], int] = field(default_factory=dict)

    def site_id(self, key: tuple[int, int]) -> int:
        """The id of call site *key*, made if new."""
        found = self.ids.get(key)
        if found is None:
            found = self.ids[key] = len(self.ids)
            self.sites[key] = _SiteTotals()
        return found


def _count_tuples(
    columns: Sequence[npt.NDArray[np.int64]], weights: npt.NDArray[np.int64] | None = None
) -> tuple[npt.NDArray[np.int64], ...]:
    """
    The distinct rows of *columns* (non-negative ints) and the objects of
    each (rows counted, or *weights* summed), as columns with the count
    last. Packed in one word and sorted once when the values fit in 63 bits.
    """
    widths = [int(c.max()).bit_length() if len(c) else 0 for c in columns]
    if sum(widths) <= 63:
        packed = np.zeros(len(columns[0]), np.int64)
        for column, width in zip(columns, widths, strict=True):
            packed = (packed << width) | column
        if weights is None:
            starts, weights = _runs(packed)
            packed = packed[starts]
        distinct, where = np.unique(packed, return_inverse=True)
        out = []
        for width in reversed(widths):
            out.append(distinct & ((1 << width) - 1))
            distinct = distinct >> width
        values = out[::-1]
    else:
        rows, where = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
        values = [rows[:, i].copy() for i in range(rows.shape[1])]
    count = np.bincount(where.ravel(), weights=weights, minlength=len(values[0]))
    return (*values, count.astype(np.int64))


def _site_labels(
    addr: npt.NDArray[np.uint64], handle: npt.NDArray[np.uint64]
) -> tuple[npt.NDArray[np.int64], list[tuple[int, int]]]:
    """
    Each row's call site as a small label, and the (addr, handle) key of each
    label. Kernel and module text lie in the top 2 GiB, so a site is packed
    as its address's low half and the handle, and one sort labels the batch;
    other values (0: no track) are labelled by address alone.
    """
    kernel = (addr >> np.uint64(32)) == np.uint64(0xFFFFFFFF)
    packed = (addr << np.uint64(32)) | handle
    if kernel.all():
        starts, lengths = _runs(packed)
        distinct, labels = np.unique(packed[starts], return_inverse=True)
        keys = [(0xFFFFFFFF00000000 | v >> 32, v & 0xFFFFFFFF) for v in distinct.tolist()]
        return np.repeat(labels.astype(np.int64).ravel(), lengths), keys
    labels = np.empty(len(addr), np.int64)
    ours, where = np.unique(packed[kernel], return_inverse=True)
    labels[kernel] = where.ravel()
    keys = [(0xFFFFFFFF00000000 | v >> 32, v & 0xFFFFFFFF) for v in ours.tolist()]
    others, where = np.unique(addr[~kernel], return_inverse=True)
    labels[~kernel] = where.ravel() + len(keys)
    keys += [(v, 0) for v in others.tolist()]
    return labels, keys


class CallSiteObserver:
    """
    Counts every allocated object's alloc track by call site; labels rows
    with their call site for per-cluster counts. See the module docstring.
    """

    def __init__(self) -> None:
        self.layouts: dict[int, TrackLayout] = {}
        self.totals: dict[int, _CacheTotals] = {}

    def begin(self, prog: Program, caches: list[Object]) -> None:
        self.layouts = {layout.cache: layout for layout in tracked_caches(caches)}

    def observe(self, batch: ObjectBatch) -> _Partial | None:
        layout = self.layouts.get(batch.layout.address)
        if layout is None or len(batch.rows) == 0:
            return None
        rows = batch.rows
        at = layout.offset
        addr = _column(rows, at + layout.addr, "<u8")
        if layout.handle is not None:
            handle = _column(rows, at + layout.handle, "<u4").astype(np.uint64)
        else:
            handle = np.zeros(len(rows), np.uint64)
        labels, keys = _site_labels(addr, handle)
        when = _column(rows, at + layout.when, "<u8")
        n = len(keys)
        objects = np.bincount(labels, minlength=n).astype(np.int64)
        # Oldest and newest per label: per run of one label, then per label.
        starts, _ = _runs(labels)
        head = labels[starts]
        when_min = np.full(n, np.iinfo(np.uint64).max, np.uint64)
        when_max = np.zeros(n, np.uint64)
        np.minimum.at(when_min, head, np.minimum.reduceat(when, starts))
        np.maximum.at(when_max, head, np.maximum.reduceat(when, starts))
        # cpu and pid are ints; read as unsigned so that all values pack.
        cpu = _column(rows, at + layout.cpu, "<u4").astype(np.int64)
        pid = _column(rows, at + layout.pid, "<u4").astype(np.int64)
        sizes = None
        if layout.orig_size is not None:
            size = _column(rows, layout.orig_size, "<u4").astype(np.int64)
            sizes = _count_tuples([labels, size])
        who = _count_tuples([labels, cpu, pid])
        return _Partial(layout.cache, keys, labels, objects, when_min, when_max, who, sizes)

    def row_labels(self, partial: _Partial | None) -> RowLabels | None:
        if partial is None:
            return None
        return partial.labels, list(partial.keys)

    def absorb(self, partial: _Partial | None) -> None:
        if partial is None:
            return
        totals = self.totals.setdefault(partial.cache, _CacheTotals())
        ids = np.array([totals.site_id(key) for key in partial.keys], np.int64)
        for key, objects, low, high in zip(
            partial.keys,
            partial.objects.tolist(),
            partial.when_min.tolist(),
            partial.when_max.tolist(),
            strict=True,
        ):
            site = totals.sites[key]
            site.objects += objects
            site.when_min = min(site.when_min, low)
            site.when_max = max(site.when_max, high)
        label, cpu, pid, count = partial.who
        totals.who.append((ids[label], cpu, pid, count))
        totals.entries += len(label)
        if partial.sizes is not None:
            label, size, count = partial.sizes
            totals.sizes.append((ids[label], size, count))
        if totals.entries > _REDUCE_ENTRIES:
            _reduce(totals)

    def merge(self, other: CallSiteObserver) -> None:
        self.layouts.update(other.layouts)
        for cache, theirs in other.totals.items():
            totals = self.totals.setdefault(cache, _CacheTotals())
            their_keys = list(theirs.ids)
            ids = np.array([totals.site_id(key) for key in their_keys], np.int64)
            for key in their_keys:
                site, their = totals.sites[key], theirs.sites[key]
                site.objects += their.objects
                site.when_min = min(site.when_min, their.when_min)
                site.when_max = max(site.when_max, their.when_max)
            for label, *rest in theirs.who:
                totals.who.append((ids[label], *rest))
            for label, *rest in theirs.sizes:
                totals.sizes.append((ids[label], *rest))
            totals.entries += theirs.entries
            _reduce(totals)


def _reduce(totals: _CacheTotals) -> None:
    """Sum the pieces of (site, cpu, pid) and (site, size) counts into one each."""
    for name in ("who", "sizes"):
        pieces = getattr(totals, name)
        if len(pieces) < 2:
            continue
        columns = [np.concatenate([p[i] for p in pieces]) for i in range(len(pieces[0]))]
        setattr(totals, name, [_count_tuples(columns[:-1], columns[-1])])
    totals.entries = sum(len(p[0]) for p in totals.who)


# --- Naming addresses ----------------------------------------------------------------


@dataclass(frozen=True)
class _InitText:
    module: str
    start: int
    end: int


class AddressNamer:
    """
    Names code addresses as ``function+0xoff`` (vmlinux) or
    ``module:function+0xoff``, a module's freed init text as
    ``module:<init text>+0xoff``, anything else as its hex value. Each
    address is named once.
    """

    def __init__(self, prog: Program) -> None:
        self.prog = prog
        add_module_symbols(prog)
        self.modules: list[tuple[int, int, str]] = []
        self.init_text: list[_InitText] = []
        #: Modules (or the module list) that could not be read: their
        #: addresses stay unnamed, and the report says so.
        self.errors: list[str] = []
        try:
            for mod in for_each_module(prog):
                try:
                    name = mod.name.string_().decode(errors="replace")
                    for start, size in module_address_regions(mod):
                        if size:
                            self.modules.append((start, start + size, name))
                    self.init_text.extend(_freed_init_text(mod, name))
                except (FaultError, AttributeError) as e:
                    self.errors.append(f"module at {mod.value_():#x}: {e}")
        except (LookupError, FaultError, AttributeError) as e:
            self.errors.append(f"module list: {e}")
        self._names: dict[int, str] = {}

    def module_of(self, address: int) -> str | None:
        for start, end, name in self.modules:
            if start <= address < end:
                return name
        return None

    def name(self, address: int) -> str:
        found = self._names.get(address)
        if found is None:
            found = self._names[address] = self._name(address)
        return found

    def _name(self, address: int) -> str:
        if address == 0:
            return "<no track>"
        module = self.module_of(address)
        for init in self.init_text:
            if module is None and init.start <= address < init.end:
                return f"{init.module}:<init text>+{address - init.start:#x}"
        try:
            symbol = self.prog.symbol(address)
        except LookupError:
            return f"{address:#x}" if module is None else f"{module}:{address:#x}"
        where = f"{symbol.name}+{address - symbol.address:#x}"
        return where if module is None else f"{module}:{where}"


def _freed_init_text(mod: Object, name: str) -> list[_InitText]:
    """
    The init text of module *mod* once freed (as after a successful load):
    from its ``.init.text`` section address to the next section address
    above it, as the kernel laid the init sections out.
    """
    try:
        if _init_base(mod):
            return []  # Still loading: its init symbols are there.
        attrs = mod.sect_attrs
        sections: dict[str, int] = {}
        for i in range(attrs.nsections.value_()):
            attr = attrs.attrs[i]
            section = attr.battr.attr.name.string_().decode(errors="replace")
            try:
                sections[section] = attr.address.value_()
            except AttributeError:
                sections[section] = attr.battr.private.value_()
    except (LookupError, FaultError, AttributeError):
        return []
    start = sections.get(".init.text")
    if not start:
        return []
    above = [a for a in sections.values() if a > start]
    end = min(above) if above else start + (1 << 20)
    return [_InitText(name, start, end)]


def _init_base(mod: Object) -> int:
    """Where the module's init text is while it initialises; 0 once freed."""
    try:
        return int(mod.init_layout.base.value_())
    except AttributeError:
        pass
    try:
        init_text = mod.prog_.constant("MOD_INIT_TEXT").value_()
        return int(mod.mem[init_text].base.value_())
    except (LookupError, AttributeError):
        return 0


# --- The report ----------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """One stack depot stack and the objects allocated through it."""

    handle: int
    objects: int
    #: Frames, innermost first, named like call sites.
    frames: tuple[str, ...]


@dataclass(frozen=True)
class CallSite:
    """One allocation call site (a return address) of one cache."""

    name: str
    address: int
    objects: int
    #: Most frequent pids and CPUs, with objects; how many distinct.
    pids: tuple[tuple[int, int], ...]
    pids_seen: int
    cpus: tuple[tuple[int, int], ...]
    cpus_seen: int
    #: Age of the youngest and oldest objects, seconds; None without HZ.
    age_min: float | None
    age_max: float | None
    #: Objects per hour over the age span (None when all are of one age).
    rate_per_hour: float | None
    #: Most frequent sizes asked of kmalloc, with objects (6.1 on).
    requested_sizes: tuple[tuple[int, int], ...]
    stacks: tuple[Stack, ...]


@dataclass(frozen=True)
class CacheCallSites:
    """The call sites of one cache that keeps alloc tracks."""

    cache: str
    #: Objects whose track was read (every allocated object walked).
    objects: int
    distinct_sites: int
    sites: tuple[CallSite, ...]


@dataclass(frozen=True)
class ClusterSite:
    """One call site of a cluster: objects of the cluster it allocated."""

    name: str
    address: int
    objects: int
    #: The most frequent stack among them, if the track has handles.
    stack: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterCallSites:
    """A cluster's objects by call site (exact as the cluster's count)."""

    #: Objects of the cluster with a known call site (its ``objects`` when
    #: every object was tracked).
    objects: int
    distinct_sites: int
    sites: tuple[ClusterSite, ...]


@dataclass(frozen=True)
class CallSiteReport:
    """Call sites of a mining run: per cache, and per cluster of the report."""

    hz: int | None
    jiffies: int | None
    #: Seconds since boot by jiffies (None without HZ).
    uptime: float | None
    caches: tuple[CacheCallSites, ...]
    #: One per cluster of the report, in its order.
    clusters: tuple[ClusterCallSites, ...]
    #: Modules that could not be read, so their call sites are unnamed.
    module_errors: tuple[str, ...] = ()


def _age(now: int | None, when: int, hz: int | None) -> float | None:
    """Seconds from jiffies *when* to the dump's jiffies *now* (None: unknown or later)."""
    if now is None or hz is None or when > now:
        return None
    return round((now - when) / hz, 3)


def _top(counter: Counter[int], n: int = VALUES_SHOWN) -> tuple[tuple[int, int], ...]:
    return tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n])


@dataclass
class _Naming:
    """What names a call site's addresses and stacks, and dates its tracks."""

    namer: AddressNamer
    depot: StackDepot | None
    hz: int | None
    #: The dump's jiffies, or None.
    now: int | None

    def frames(self, handle: int) -> tuple[str, ...]:
        """The named frames of the stack depot's stack *handle* (none without one)."""
        stack = self.depot.fetch(handle) if self.depot is not None and handle else None
        return tuple(self.namer.name(pc) for pc in stack or ())


def call_site_report(
    prog: Program,
    observer: CallSiteObserver,
    cluster_labels: Sequence[dict[Hashable, int]] = (),
) -> CallSiteReport:
    """
    Put together what *observer* counted, naming addresses and decoding
    stacks once each; *cluster_labels* are the tally's per-cluster counts by
    call site (:meth:`~dumpminer.clustering.tally.FragmentTally.cluster_labels`).
    """
    hz, now = kernel_hz(prog), kernel_jiffies(prog)
    naming = _Naming(AddressNamer(prog), stack_depot(prog), hz, now)
    uptime = None
    if hz and now is not None:
        uptime = round(((now - initial_jiffies(hz)) & (2**64 - 1)) / hz, 3)
    caches = [
        _cache_call_sites(totals, observer.layouts[cache].name, naming)
        for cache, totals in observer.totals.items()
    ]
    clusters = [
        _cluster_call_sites(labels, naming, with_stacks=rank < CLUSTER_STACKS)
        for rank, labels in enumerate(cluster_labels)
    ]
    return CallSiteReport(
        hz, now, uptime, tuple(caches), tuple(clusters), module_errors=tuple(naming.namer.errors)
    )


def _cache_call_sites(totals: _CacheTotals, name: str, naming: _Naming) -> CacheCallSites:
    """One cache's call sites: the :data:`SITES_SHOWN` with most objects, each in full."""
    _reduce(totals)
    keys = list(totals.ids)
    # Group (addr, handle) keys by address: a call site, its stacks.
    by_address: dict[int, list[int]] = {}
    for i, (address, _) in enumerate(keys):
        by_address.setdefault(address, []).append(i)
    objects_at = {
        address: sum(totals.sites[keys[i]].objects for i in ids)
        for address, ids in by_address.items()
    }
    # Only the sites shown are named and their stacks decoded: a symbol
    # lookup costs about a millisecond.
    shown = sorted(objects_at, key=lambda a: (-objects_at[a], a))[:SITES_SHOWN]
    sites = [
        _call_site(totals, keys, address, by_address[address], objects_at[address], naming)
        for address in shown
    ]
    return CacheCallSites(
        cache=name,
        objects=sum(objects_at.values()),
        distinct_sites=len(objects_at),
        sites=tuple(sites),
    )


def _call_site(
    totals: _CacheTotals,
    keys: list[tuple[int, int]],
    address: int,
    ids: list[int],
    objects: int,
    naming: _Naming,
) -> CallSite:
    """The call site at *address* (site ids *ids*): who, where, how old, which stacks."""
    pids: Counter[int] = Counter()
    cpus: Counter[int] = Counter()
    requested: Counter[int] = Counter()
    who = totals.who[0] if totals.who else None
    if who is not None:
        mine = np.isin(who[0], ids)
        for cpu, pid, count in zip(
            who[1][mine].tolist(), who[2][mine].tolist(), who[3][mine].tolist(), strict=True
        ):
            cpus[cpu] += count
            pids[pid] += count
    sizes = totals.sizes[0] if totals.sizes else None
    if sizes is not None:
        mine = np.isin(sizes[0], ids)
        for size, count in zip(sizes[1][mine].tolist(), sizes[2][mine].tolist(), strict=True):
            requested[size] += count
    site_totals = [totals.sites[keys[i]] for i in ids]
    age_min = _age(naming.now, max(s.when_max for s in site_totals), naming.hz)
    age_max = _age(naming.now, min(s.when_min for s in site_totals), naming.hz)
    rate = None
    if age_min is not None and age_max is not None and age_max > age_min:
        rate = round(objects * 3600 / (age_max - age_min), 1)
    heaviest = sorted(
        ((totals.sites[keys[i]].objects, keys[i][1]) for i in ids if keys[i][1]),
        key=lambda pair: (-pair[0], pair[1]),
    )[:STACKS_SHOWN]
    return CallSite(
        name=naming.namer.name(address),
        address=address,
        objects=objects,
        pids=_top(pids),
        pids_seen=len(pids),
        cpus=_top(cpus),
        cpus_seen=len(cpus),
        age_min=age_min,
        age_max=age_max,
        rate_per_hour=rate,
        requested_sizes=_top(requested),
        stacks=tuple(Stack(handle, count, naming.frames(handle)) for count, handle in heaviest),
    )


def _cluster_call_sites(
    labels: dict[Hashable, int], naming: _Naming, with_stacks: bool
) -> ClusterCallSites:
    """One cluster's call sites from its (addr, handle) label counts; the top one's stack."""
    per_address: Counter[int] = Counter()
    best_stack: dict[int, tuple[int, int]] = {}
    for key, objects in labels.items():
        assert isinstance(key, tuple)
        address, handle = key
        per_address[address] += objects
        if handle and objects > best_stack.get(address, (0, 0))[0]:
            best_stack[address] = (objects, handle)
    ranked = sorted(per_address.items(), key=lambda kv: (-kv[1], kv[0]))
    return ClusterCallSites(
        objects=sum(per_address.values()),
        distinct_sites=len(per_address),
        sites=tuple(
            ClusterSite(
                naming.namer.name(address),
                address,
                objects,
                naming.frames(best_stack[address][1])
                if address in best_stack and with_stacks
                else (),
            )
            for address, objects in ranked[:CLUSTER_SITES_SHOWN]
        ),
    )


def shape_call_sites(
    prog: Program, summary: ShapeSummary, caches: Sequence[Object]
) -> ShapeSummary:
    """
    *summary* with each shape group's call sites, read from the alloc tracks
    of the objects its attribution sampled (a bounded sample, stated as
    ``sampled``), when their cache keeps tracks. String-less objects have
    no fragment to carry a call-site count through the tally, so unlike a
    cluster's these counts are of the sample, not of the group.
    """
    layouts = {layout.cache: layout for layout in tracked_caches(caches)}
    if not layouts:
        return summary
    only = next(iter(layouts.values())) if len(layouts) == 1 else None
    namer = AddressNamer(prog)
    groups = []
    for group in summary.groups:
        sites: Counter[str] = Counter()
        for address in group.sampled:
            layout = only or _layout_of(prog, address, layouts)
            if layout is None:
                continue
            try:
                called = prog.read_u64(address + layout.offset + layout.addr)
            except FaultError:
                continue
            sites[namer.name(called)] += 1
        ranked = tuple(sorted(sites.items(), key=lambda item: (-item[1], item[0])))
        groups.append(replace(group, allocated_by=ranked))
    return replace(summary, groups=tuple(groups))


def _layout_of(prog: Program, address: int, layouts: dict[int, TrackLayout]) -> TrackLayout | None:
    """The track layout of the cache holding the object at *address* (a glob's caches)."""
    info = slab_object_info(prog, address)
    return None if info is None else layouts.get(info.slab_cache.value_())
