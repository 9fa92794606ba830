"""
Benchmark: where the time of ``dumpminer mine`` goes, phase by phase, in a
fresh process as a user runs it (start-up, imports, opening the dump, the
page-array scan, the walk and count, the report).

    python3 bench/bench_phases.py [--sample big] [--series 6.1] [--runs 5]

Each run is a new interpreter that times, with wall and CPU clocks (CPU: all
threads of the process), importing the command line, ``open_dump``,
:func:`~dumpminer.slub.walk.find_slab_pages` (the page-array scan), then the whole
``mine`` (which scans again, then walks, counts and reports), then rendering
the table. Medians of the runs are printed; on a shared machine, CPU seconds
are steadier than wall seconds. CPU is given for the whole process and for
its main thread (from /proc, in clock ticks): the other threads (reading,
counting, drgn's indexing) did the difference, and on two cores a phase
cannot take less wall time than its main thread's CPU, nor than half the
process's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, os, resource, sys, time
def main_thread_cpu():
    fields = open(f"/proc/self/task/{os.getpid()}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
def clocks():
    return time.perf_counter(), time.process_time(), main_thread_cpu()
marks = {}
start = clocks()
def mark(name, since):
    now = clocks()
    marks[name] = (now[0] - since[0], now[1] - since[1], now[2] - since[2])
    return now
t = start
import dumpminer.cli
from dumpminer.dump.open import open_dump
t = mark("import", t)
dump = open_dump(sys.argv[1], sys.argv[2])
t = mark("open", t)
from drgn.helpers.linux.slab import find_slab_cache
from dumpminer.slub.walk import WalkStats, find_slab_pages
cache = find_slab_cache(dump.prog, sys.argv[3])
pages = find_slab_pages(dump.prog, {cache.value_()}, WalkStats())
t = mark("page_array_scan", t)
import dumpminer
report = dumpminer.mine(dump.prog, sys.argv[3], dump=dump, workers=1)
t = mark("mine", t)
text = dumpminer.render(report, "table")
t = mark("render", t)
marks["total"] = (t[0] - start[0], t[1] - start[1], t[2] - start[2])
marks["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
marks["objects"] = report.scan.objects_scanned
print(json.dumps(marks))
"""


def main() -> None:
    from sample_dumps.build import build_sample

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sample", default="big")
    parser.add_argument("--series", default="6.1")
    parser.add_argument("--format", default="kdump")
    parser.add_argument("--cache", default="kmalloc-32")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    manifest = json.loads(Path(build_sample(args.sample, args.series)).read_text())
    vmcore = next(d["path"] for d in manifest["dumps"] if d["format"] == args.format)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = []
    for _ in range(args.runs):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, vmcore, manifest["vmlinux"], args.cache],
            env=env, cwd=ROOT, check=True, capture_output=True, text=True,
        )  # fmt: skip
        marks = json.loads(out.stdout.strip().splitlines()[-1])
        marks["process"] = (time.perf_counter() - started, 0.0, 0.0)
        runs.append(marks)
    print(f"{args.sample} {args.series} {args.format} {args.cache}: {runs[0]['objects']} objects,"
          f" {args.runs} runs, load {os.getloadavg()[0]:.1f}")  # fmt: skip
    for phase in ("import", "open", "page_array_scan", "mine", "render", "total", "process"):
        wall = statistics.median(r[phase][0] for r in runs)
        cpu = statistics.median(r[phase][1] for r in runs)
        main = statistics.median(r[phase][2] for r in runs)
        print(f"  {phase:16} wall {wall:6.3f} s   cpu {cpu:6.3f} s   main thread {main:6.3f} s")
    print(f"  peak RSS {max(r['peak_rss_mib'] for r in runs):.0f} MiB")


if __name__ == "__main__":
    main()
