"""
Benchmark: the probe for pointer noise (dumpminer/scan/pointernoise.py) on a
sample's kmalloc-32: its estimate and time for probes of several sizes,
beside the exact count (the probe run over every slab).

    python3 bench/bench_pointernoise.py [--sample big] [--series 6.1]
                                        [--min-slabs 1024 3000] [--runs 5]

The estimate decides whether ``mine`` blanks kernel pointers (over
--max-fragments, 1,000,000 by default): how far it stays from that bound on
each side is what this shows. Times are medians of --runs probes in one
process, the dump opened once.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dumpminer.dump.open import open_dump  # noqa: E402
from dumpminer.scan import pointernoise  # noqa: E402
from dumpminer.slub.caches import resolve_caches  # noqa: E402
from dumpminer.slub.walk import WalkStats, find_slab_pages  # noqa: E402
from sample_dumps.build import build_sample  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sample", default="big")
    parser.add_argument("--series", default="6.1")
    parser.add_argument("--cache", default="kmalloc-32")
    parser.add_argument("--min-slabs", type=int, nargs="+", default=[1024, 3000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-exact", action="store_true", help="skip the probe of every slab")
    args = parser.parse_args()
    manifest = json.loads(Path(build_sample(args.sample, args.series)).read_text())
    vmcore = next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump")
    dump = open_dump(vmcore, manifest["vmlinux"])
    caches = resolve_caches(dump.prog, args.cache)
    pages = find_slab_pages(dump.prog, {c.value_() for c in caches}, WalkStats())
    print(f"sample {args.sample} ({args.series}): {len(pages)} slabs of {args.cache}")
    settings = [(m, pointernoise.PROBE_FRACTION) for m in args.min_slabs]
    if not args.no_exact:
        settings.append((len(pages), 1.0))
    for min_slabs, fraction in settings:
        pointernoise.PROBE_MIN_SLABS, pointernoise.PROBE_FRACTION = min_slabs, fraction
        times = []
        noise = None
        for _ in range(args.runs if fraction < 1 else 1):
            start = time.perf_counter()
            noise = pointernoise.probe_pointer_noise(dump.prog, caches, pages, 3, 1_000_000)
            times.append(time.perf_counter() - start)
        assert noise is not None
        label = "exact (every slab)" if fraction >= 1 else f"min {min_slabs} slabs"
        print(
            f"{label:20} probed {noise.slabs_probed:7} slabs  runs seen {noise.runs_seen:8}"
            f"  in one slab {noise.runs_seen_in_one_slab:8}  estimate {noise.runs_estimated:9}"
            f"  masked {noise.masked!s:5}  {statistics.median(times):.3f} s"
        )


if __name__ == "__main__":
    main()
