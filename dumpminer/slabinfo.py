"""
The caches listing: ``dumpminer caches``, like /proc/slabinfo or crash's
``kmem -s``, sorted by memory so the leaking cache comes first.

Counts come from the caches' lists, as crash's ``kmem -s`` counts them
(:func:`~dumpminer.caches.cache_usage`; not drgn's ``slab_cache_usage``, which
overcounts on many CPUs),
merged caches from :func:`~drgn.helpers.linux.slab.get_slab_cache_aliases`,
and the kernel's own total (the ``Slab:`` line of /proc/meminfo) from
:func:`~drgn.helpers.linux.slab.slab_total_usage`, to check the sum against.
The two differ by design: the kernel's counters also hold ``kmalloc()``
allocations too large for any cache (whole pages from the page allocator) and
leave out per-CPU deltas not yet folded in; docs/triage.md explains, and
tests/test_triage.py checks it page by page on the real samples.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from drgn import FaultError, Program
from drgn.helpers.linux.slab import get_slab_cache_aliases, slab_total_usage

from dumpminer.caches import CacheUsage, cache_usage, slab_caches_reached
from dumpminer.errors import KernelDataError
from dumpminer.report import csv_cell, markdown_escape, terminal_escape

SCHEMA = "dumpminer.caches/1"


@dataclass(frozen=True)
class CacheLine:
    """One cache with its memory and the names merged into it."""

    usage: CacheUsage
    aliases: tuple[str, ...]
    #: Share of all slab memory counted here.
    share: float


@dataclass(frozen=True)
class SlabInfo:
    """Every slab cache of a dump, most memory first."""

    caches: list[CacheLine]
    #: Sum of the caches' slab memory.
    memory: int
    #: The kernel's NR_SLAB_RECLAIMABLE_B + NR_SLAB_UNRECLAIMABLE_B, in bytes: the
    #: ``Slab:`` line of /proc/meminfo, which also counts large ``kmalloc()``.
    kernel_slab_memory: int
    #: Caches whose counts could not be read: (address, why). A corrupt
    #: cache is listed here instead of ending the listing of the others.
    unreadable: list[tuple[int, str]] = field(default_factory=list)


def slab_info(prog: Program) -> SlabInfo:
    """Count every cache in *prog* and sort by memory, descending."""
    usages = []
    unreadable = []
    for cache in slab_caches_reached(prog):
        try:
            usages.append(cache_usage(cache))
        except KernelDataError as e:
            unreadable.append((cache.value_(), str(e)))
        except FaultError as e:  # its name or struct kmem_cache: a dump cut short
            unreadable.append((cache.value_(), f"unreadable: {e}"))
    merged: dict[str, list[str]] = {}
    try:
        aliases = get_slab_cache_aliases(prog)
    except (LookupError, ValueError, FaultError):  # CONFIG_SLUB, CONFIG_SYSFS; a cut dump
        aliases = {}
    for alias, target in aliases.items():
        merged.setdefault(target, []).append(alias)
    memory = sum(u.memory for u in usages)
    usages.sort(key=lambda u: (-u.memory, u.name, u.address))
    lines = [
        CacheLine(u, tuple(sorted(merged.get(u.name, ()))), u.memory / memory if memory else 0.0)
        for u in usages
    ]
    total = slab_total_usage(prog)
    page_size = prog["PAGE_SIZE"].value_()
    kernel = (total.reclaimable_pages + total.unreclaimable_pages) * page_size
    return SlabInfo(lines, memory, kernel, unreadable)


def human(size: float) -> str:
    """Bytes in binary units, as slabtop shows them."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _row(line: CacheLine) -> dict[str, Any]:
    u = line.usage
    return {
        "name": u.name,
        "address": f"{u.address:#x}",
        "object_size": u.object_size,
        "stride": u.stride,
        "allocated": u.allocated,
        # False: a list or counter could not be read whole: allocated is not exact.
        "allocated_exact": u.exact,
        "allocated_damage": u.inexact_why,
        "total": u.total,
        "slabs": u.slabs,
        "pages_per_slab": u.pages_per_slab,
        "memory": u.memory,
        "memory_human": human(u.memory),
        "share": round(line.share, 6),
        "aliases": list(line.aliases),
    }


def render_slab_info(info: SlabInfo, fmt: str, top: int | None = None) -> str:
    """Render *info* as a table, JSON, CSV or Markdown."""
    rows = [_row(line) for line in info.caches[:top]]
    if fmt == "json":
        doc = {
            "schema": SCHEMA,
            "slab_memory": info.memory,
            "kernel_slab_memory": info.kernel_slab_memory,
            "caches": rows,
            "unreadable": [{"address": f"{a:#x}", "error": e} for a, e in info.unreadable],
        }
        return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"
    columns = ["name", "object_size", "allocated", "total", "slabs", "memory_human", "share"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([*columns, "memory", "aliases", "allocated_exact"])
        for r in rows:
            cells = [r[c] for c in columns] + [r["memory"], " ".join(r["aliases"]),
                                               r["allocated_exact"]]
            writer.writerow([csv_cell(cell) for cell in cells])
        return out.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join([*columns, "aliases"]) + " |", "|---" * (len(columns) + 1) + "|"]
        for r in rows:
            cells = [str(r[c]) for c in columns] + [" ".join(r["aliases"])]
            lines.append("| " + " | ".join(markdown_escape(c) for c in cells) + " |")
        lines += [markdown_escape(line) for line in _damage_lines(rows)]
        return "\n".join(lines) + "\n"
    header = f"{'NAME':<24} {'OBJSIZE':>7} {'ALLOCATED':>10} {'TOTAL':>10} {'SLABS':>7} "
    header += f"{'MEMORY':>10} {'SHARE':>6}  ALIASES"
    lines = [header]
    for r in rows:
        lines.append(
            f"{terminal_escape(r['name']):<24} {r['object_size']:>7} {r['allocated']:>10} "
            f"{r['total']:>10} {r['slabs']:>7} {r['memory_human']:>10} "
            f"{100 * r['share']:>5.1f}%  {terminal_escape(' '.join(r['aliases']))}"
        )
    lines.append(
        f"slab memory {human(info.memory)} in {len(info.caches)} caches; "
        f"Slab: in /proc/meminfo {human(info.kernel_slab_memory)}, which also counts "
        "kmalloc() too large for any cache (docs/triage.md)"
    )
    lines += [terminal_escape(line) for line in _damage_lines(rows)]
    for address, error in info.unreadable:
        lines.append(terminal_escape(f"unreadable cache at {address:#x}: {error}"))
    return "\n".join(lines) + "\n"


def _damage_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per cache whose allocated count is not exact, saying why."""
    return [
        f"{r['name']}: allocated {r['allocated']} is not exact: {r['allocated_damage']}"
        for r in rows
        if not r["allocated_exact"]
    ]
