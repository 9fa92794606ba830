"""
Benchmark: what leaving out pointer bytes costs the scan of one batch.

    python3 bench/bench_pointer_bytes.py [--sample seed] [--series 6.1] [--cache C] [--runs 21]

Reads every allocated object of the cache from the sample's kdump dump,
repeats the rows up to one batch (dumpminer.scan.engine.BATCH_BYTES), and
times, alternating in one process, the count of that batch three ways: raw
bytes (``blank_pointers=False``, what ``--keep-pointers`` does), pointer words
left out in the compiled scan (the default), and the numpy copy with those
words zeroed that ``--mask-pointers`` made before (mask_kernel_pointers, then
the raw count). Prints medians, spreads and the ratios to the raw count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from dumpminer.dump.open import open_dump
from dumpminer.extract.fragments import count_objects
from dumpminer.extract.pointers import mask_kernel_pointers
from dumpminer.scan.engine import BATCH_BYTES, batch_rows
from dumpminer.slub.caches import resolve_caches
from dumpminer.slub.walk import WalkStats, walk_slabs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sample", default="seed")
    parser.add_argument("--series", default="6.1")
    parser.add_argument("--cache", default="kmalloc-32")
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    from sample_dumps.build import build_sample

    manifest = json.loads(Path(build_sample(args.sample, args.series)).read_text())
    vmcore = next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump")
    dump = open_dump(vmcore, manifest["vmlinux"])
    caches = resolve_caches(dump.prog, args.cache)
    slabs = list(walk_slabs(dump.prog, caches, stats=WalkStats()))
    rows, addresses, allocated = batch_rows(slabs)
    if allocated is not None:
        rows, addresses = rows[allocated], addresses[allocated]
    rows = np.ascontiguousarray(rows[:, : slabs[0].layout.object_size])
    times = max(1, BATCH_BYTES // rows.nbytes)
    batch = np.ascontiguousarray(np.tile(rows, (times, 1)))
    where = np.tile(addresses, times)
    ways: dict[str, Callable[[], object]] = {
        "raw": lambda: count_objects(batch, where, blank_pointers=False),
        "left out (scan)": lambda: count_objects(batch, where),
        "masked copy (numpy)": lambda: count_objects(
            mask_kernel_pointers(batch), where, blank_pointers=False
        ),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.runs):
        for name, way in ways.items():
            started = time.perf_counter()
            way()
            seconds[name].append(time.perf_counter() - started)
    print(f"{args.sample} {args.series} {args.cache}: batch of {len(batch)} objects, "
          f"{batch.nbytes / 2**20:.1f} MiB, {args.runs} runs each, alternating")  # fmt: skip
    raw = statistics.median(seconds["raw"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:20} median {median * 1e3:7.1f} ms (min {min(values) * 1e3:.1f}, "
              f"max {max(values) * 1e3:.1f})  x{median / raw:.3f} of raw")  # fmt: skip


if __name__ == "__main__":
    main()
