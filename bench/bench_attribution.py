"""
Benchmark: what pointer attribution and the shape groups of string-less
objects (issue 11) cost, ``dumpminer mine`` with them (the default) against
``--no-attribution``, end to end in fresh processes, as a user runs it.

    python3 bench/bench_attribution.py [--sample big] [--series 6.1]
                                       [--cache kmalloc-32 --cache kmalloc-96] [--runs 5]
                                       [--library]

With ``--library``, ``dumpminer.mine()`` is timed instead, in this process
(the dump opened once, no start-up): the walk's share of the cost is larger
there.

Each round runs both settings once per cache, in alternating order, so that a
noisy neighbour slows both alike; the table gives each setting's median wall
time and the ratio of the medians, measured in the same run. For a cache with
a planted string-less leak (the manifest's "string_less"), one more untimed
JSON run checks that its shape group has exactly the planted count and names
the planted static (on big: 1,000,000 list nodes pointing at one table).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_compare import alternate, run_tree  # noqa: E402

from sample_dumps.build import build_sample  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sample", default="big")
    parser.add_argument("--series", default="6.1")
    parser.add_argument("--cache", action="append")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--library", action="store_true", help="time dumpminer.mine() instead")
    args = parser.parse_args()
    caches = args.cache or ["kmalloc-32", "kmalloc-96"]
    manifest = json.loads(Path(build_sample(args.sample, args.series)).read_text())
    vmcore = next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump")
    if args.library:
        library(vmcore, manifest["vmlinux"], caches, args.runs)
        return
    settings = {"off": ["--no-attribution"], "on": []}
    print(f"{args.sample} {args.series}: {vmcore}, {args.runs} rounds")
    print(f"{'cache':<12} {'off (median)':>13} {'on (median)':>12} {'ratio':>6}  on/off per round")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.txt"
        for cache in caches:
            base = [vmcore, "--vmlinux", manifest["vmlinux"], "--cache", cache]
            variants = {name: (ROOT, [*base, *extra], out) for name, extra in settings.items()}
            measured = alternate(variants, args.runs)
            off, on = (statistics.median(measured[n].times) for n in ("off", "on"))
            rounds = " ".join(
                f"{a / b:.2f}"
                for a, b in zip(measured["on"].times, measured["off"].times, strict=True)
            )
            print(f"{cache:<12} {off:>12.2f}s {on:>11.2f}s {on / off:>5.2f}x  {rounds}")
            planted = manifest.get("string_less", {}).get(cache)
            if planted:
                check_group(base, planted, Path(tmp) / "report.json")


def library(vmcore: str, vmlinux: str, caches: list[str], runs: int) -> None:
    """Time dumpminer.mine() with and without attribution, alternating, in this process."""
    import time

    import dumpminer

    dump = dumpminer.open_dump(vmcore, vmlinux)
    print(f"library, {runs} rounds: {'cache':<12} off, on (medians), ratio, attribution_seconds")
    for cache in caches:
        times: dict[bool, list[float]] = {False: [], True: []}
        spent = []
        for round_ in range(runs):
            for on in (False, True) if round_ % 2 == 0 else (True, False):
                start = time.perf_counter()
                report = dumpminer.mine(dump.prog, cache, dump=dump, attribution=on)
                times[on].append(time.perf_counter() - start)
                if on:
                    spent.append(report.attribution_seconds)
        off, on_ = statistics.median(times[False]), statistics.median(times[True])
        print(f"{cache:<12} {off:.2f} s, {on_:.2f} s, {on_ / off:.2f}x, "
              f"{statistics.median(spent):.3f} s")  # fmt: skip


def check_group(base: list[str], planted: dict[str, Any], out: Path) -> None:
    """Print whether the largest shape group is the planted leak, exactly."""
    run_tree(ROOT, base, out, "json")
    group = json.loads(out.read_text())["string_less"]["groups"][0]
    ((offset, static),) = planted["points_to"].items()
    word = group["shape"][int(offset) // 8]
    verdict = "OK" if group["objects"] == planted["objects"] and word.endswith(static) else "WRONG"
    print(f"  {verdict}: largest shape group {group['objects']} objects (planted "
          f"{planted['objects']}), +{offset} {word}: {group['shape_text']}")  # fmt: skip


if __name__ == "__main__":
    main()
