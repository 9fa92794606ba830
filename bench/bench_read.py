"""
Benchmark: the ways of reading a kdump-compressed dump's slabs that issue 15
weighed, each reading the same kmalloc-32 slabs (runs of adjacent slab pages,
up to 1 MiB a read) of a sample dump.

    python3 bench/bench_read.py [--sample big] [--series 6.1] [--runs 5]

- ``drgn``: ``Program.read`` of the direct map (what the walk did), one thread.
- ``drgn-2t``: the same on two threads (drgn holds the GIL: no faster).
- ``py-zlib-2t``: Python's own reader: descriptors from the file with numpy,
  one ``os.pread`` and one ``zlib.decompress`` per page (which releases the
  GIL while it inflates), on two threads.
- ``c-zlib``, ``c-zlib-2t``: dumpminer/dump/_kdump.c with zlib, one and two threads.
- ``c-libdeflate``, ``c-libdeflate-2t``: the same with libdeflate.

Each way runs once per round, rounds interleave the ways; the medians of wall
and CPU seconds (all threads of this process) are printed, with the ratio of
each to ``drgn`` measured in the same run. A second core only shows in wall
time when the machine has one free.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dumpminer.dump import _kdump  # noqa: E402
from dumpminer.dump.kdumpread import KdumpReader  # noqa: E402
from dumpminer.dump.open import open_dump  # noqa: E402
from dumpminer.slub.walk import WalkStats, find_slab_pages  # noqa: E402
from sample_dumps.build import build_sample  # noqa: E402

#: Pages of one read: 1 MiB, as the walk reads runs of full slabs.
RUN_PAGES = 256


def slab_runs(prog: object, cache: str) -> list[tuple[int, int]]:
    """(first PFN, pages) of runs of adjacent slab pages of *cache*."""
    from drgn.helpers.linux.slab import find_slab_cache

    slab_cache = find_slab_cache(prog, cache)
    pfns = [p.pfn for p in find_slab_pages(prog, {slab_cache.value_()}, WalkStats())]
    runs: list[tuple[int, int]] = []
    for pfn in pfns:
        if runs and runs[-1][0] + runs[-1][1] == pfn and runs[-1][1] < RUN_PAGES:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((pfn, 1))
    return runs


class PythonKdump:
    """A kdump reader in Python: numpy for descriptors, zlib per page."""

    def __init__(self, reader: KdumpReader) -> None:
        self.reader = reader
        self.page = reader.block_size

    def read(self, pfn: int, pages: int) -> bytes:
        r = self.reader
        word = r.bitmap[pfn // 64]
        below = int(word) & ((1 << (pfn % 64)) - 1)
        index = int(r.rank[pfn // 64]) + below.bit_count()
        raw = os.pread(r.fd, 24 * pages, r.descs_offset + 24 * index)
        descs = np.frombuffer(raw, dtype=[("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"),
                                          ("page_flags", "<u8")])  # fmt: skip
        out = []
        for offset, size, flags in zip(
            descs["offset"].tolist(), descs["size"].tolist(), descs["flags"].tolist(), strict=True
        ):
            data = os.pread(r.fd, size, offset)
            out.append(zlib.decompress(data) if flags & 1 else data)
        return b"".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sample", default="big")
    parser.add_argument("--series", default="6.1")
    parser.add_argument("--cache", default="kmalloc-32")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    manifest = json.loads(Path(build_sample(args.sample, args.series)).read_text())
    vmcore = next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump")
    dump = open_dump(vmcore, manifest["vmlinux"])
    prog = dump.prog
    reader = KdumpReader.open(vmcore)
    assert reader is not None
    runs = slab_runs(prog, args.cache)
    page = reader.block_size
    from drgn.helpers.linux.mm import pfn_to_virt

    virt0 = pfn_to_virt(prog, 0).value_()
    python = PythonKdump(reader)

    def drgn_read(run: tuple[int, int]) -> object:
        return prog.read(virt0 + run[0] * page, run[1] * page)

    def c_read(run: tuple[int, int]) -> object:
        return reader.read(run[0] * page, run[1] * page)

    def py_read(run: tuple[int, int]) -> object:
        return python.read(*run)

    def serial(read: Callable[[tuple[int, int]], object]) -> Callable[[], None]:
        return lambda: [read(run) for run in runs] and None

    def threads(read: Callable[[tuple[int, int]], object]) -> Callable[[], None]:
        def go() -> None:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(read, runs))

        return go

    ways: dict[str, tuple[Callable[[], None], bool]] = {
        "drgn": (serial(drgn_read), False),
        "drgn-2t": (threads(drgn_read), False),
        "py-zlib-2t": (threads(py_read), False),
        "c-zlib": (serial(c_read), True),
        "c-zlib-2t": (threads(c_read), True),
        "c-libdeflate": (serial(c_read), False),
        "c-libdeflate-2t": (threads(c_read), False),
    }
    if _kdump.inflater() != "libdeflate":
        ways = {k: v for k, v in ways.items() if "libdeflate" not in k}
    # Every way reads the same bytes.
    sample = runs[len(runs) // 2]
    assert drgn_read(sample) == c_read(sample) == py_read(sample)
    wall: dict[str, list[float]] = {k: [] for k in ways}
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.runs):
        for name, (go, zlib_only) in ways.items():
            _kdump.use_zlib(zlib_only)
            started, cpu_started = time.perf_counter(), time.process_time()
            go()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
    _kdump.use_zlib(False)
    mib = sum(n for _, n in runs) * page / (1 << 20)
    print(
        f"{args.sample} {args.series} {args.cache}: {mib:.0f} MiB in {len(runs)} reads, "
        f"{args.runs} rounds, load average {os.getloadavg()[0]:.1f}"
    )
    base_wall, base_cpu = statistics.median(wall["drgn"]), statistics.median(cpu["drgn"])
    for name in ways:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(
            f"  {name:16} wall {w:6.3f} s ({base_wall / w:4.1f}x)   "
            f"CPU {c:6.3f} s ({base_cpu / c:4.1f}x less)"
        )


if __name__ == "__main__":
    main()
