"""
Benchmark: what reading allocation call sites costs, on a cache that keeps
alloc tracks (``slub_debug=U``): ``dumpminer mine`` end to end, as a user runs
it, with call sites (the default) and with ``--no-call-sites``.

    python3 bench/bench_callsites.py [--sample big-debug] [--series 6.1]
                                     [--cache kmalloc-32] [--runs 5]

Each round runs both variants once, in alternating order, so that a noisy
neighbour slows both alike; the table gives each one's median wall time and
peak RSS and the ratio of the medians, measured in the same run. The issue's
target: with tracks present, at most 2x the time without. (Without tracks,
nothing is added to the walk: compare trees with bench/bench_compare.py.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_compare import alternate, run_tree  # noqa: E402
from sample_dumps.build import build_sample  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sample", default="big-debug")
    parser.add_argument("--series", default="6.1")
    parser.add_argument("--cache", default="kmalloc-32")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", default="1", help="--workers for both variants")
    args = parser.parse_args()
    manifest = json.loads(Path(build_sample(args.sample, args.series)).read_text())
    vmcore = next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump")
    mine = [vmcore, "--vmlinux", manifest["vmlinux"], "--cache", args.cache]
    mine += ["--workers", args.workers]
    variants = {"without": [*mine, "--no-call-sites"], "with": mine}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.txt"
        measured = alternate({name: (ROOT, variants[name], out) for name in variants}, args.runs)
        run_tree(ROOT, mine, out, "json")
        report = json.loads(out.read_text())
    sites = report["call_sites"]
    tracked = sum(entry["objects"] for entry in sites["caches"]) if sites else 0
    print(
        f"{args.sample} {args.series} {args.cache}, {args.runs} rounds, "
        f"{manifest['kernel_release']}, boot options {manifest.get('boot_options')!r}; "
        f"{report['scan']['objects_scanned']} objects, {tracked} tracks read"
    )
    for name in variants:
        m = measured[name]
        spread = f"{min(m.times):.2f}-{max(m.times):.2f}"
        print(
            f"  {name:8} {statistics.median(m.times):7.2f} s  ({spread})  "
            f"CPU {statistics.median(m.cpus):6.2f} s  peak RSS {m.peak:6.0f} MiB"
        )
    on, off = measured["with"], measured["without"]
    ratio = statistics.median(on.times) / statistics.median(off.times)
    cpu_ratio = statistics.median(on.cpus) / statistics.median(off.cpus)
    print(f"  with / without call sites: {ratio:.3f} wall, {cpu_ratio:.3f} CPU")


if __name__ == "__main__":
    main()
