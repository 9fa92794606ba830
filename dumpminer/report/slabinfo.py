"""
``dumpminer caches`` rendered: the listing of :mod:`dumpminer.slub.slabinfo`
as a table like crash's ``kmem -s``, the ``dumpminer.caches/1`` JSON document,
CSV or Markdown, every cache name escaped for where it goes.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from dumpminer.report.escape import csv_cell, markdown_escape, terminal_escape
from dumpminer.report.jsontext import dumps as json_text
from dumpminer.slub.slabinfo import CacheLine, SlabInfo

SCHEMA = "dumpminer.caches/1"


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
        return json_text(doc) + "\n"
    columns = ["name", "object_size", "allocated", "total", "slabs", "memory_human", "share"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        # Columns are only ever added at the end: "allocated_exact" and "address" came
        # with issue 22 and issue 21.
        writer.writerow([*columns, "memory", "aliases", "allocated_exact", "address"])
        for r in rows:
            cells = [r[c] for c in columns] + [
                r["memory"], " ".join(r["aliases"]), r["allocated_exact"], r["address"]
            ]
            writer.writerow([csv_cell(cell) for cell in cells])
        return out.getvalue()
    if fmt == "markdown":
        head = ["cache", *columns, "aliases"]
        lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for r in rows:
            cells = [r["address"], *(str(r[c]) for c in columns), " ".join(r["aliases"])]
            lines.append("| " + " | ".join(markdown_escape(c) for c in cells) + " |")
        lines += [markdown_escape(line) for line in _damage_lines(rows)]
        return "\n".join(lines) + "\n"
    # CACHE first, the struct kmem_cache address, as crash's kmem -s shows it.
    header = f"{'CACHE':<18} {'NAME':<24} {'OBJSIZE':>7} {'ALLOCATED':>10} {'TOTAL':>10} "
    header += f"{'SLABS':>7} {'MEMORY':>10} {'SHARE':>6}  ALIASES"
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['address'][2:]:<18} "
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
