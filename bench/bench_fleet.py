"""
Benchmark: ``dumpminer fleet`` on the embedded local cluster against
``dumpminer mine`` run on each dump in turn, in fresh processes.

    python3 bench/bench_fleet.py [--dumps 12] [--rounds 3] [--cache NAME] [--baseline DIR]

The fleet is the sample dumps in the shared cache (~/.cache/dumpminer): the
seed sample of both series, then the pair samples, in their three formats,
the first ``--dumps`` of them (build them first: ``sample_dumps/build.py
--sample seed|pair --series 6.1|6.12``). Both programs run once per round, in
alternating order, so that a noisy neighbour slows both alike; the ratio of
the medians is the speed target (>= 1.7x on 2 CPUs). Each round's fleet runs
with ``--force`` in a fresh ``--out`` folder: every dump is mined.

Also printed, from the fleet report's ``timing`` and each dump's ``fleet``
section: the start-up (process start to the cluster's workers ready), the
fleet overhead per dump, ((wall - start-up) x workers - the tasks' own wall
time) / dumps, which counts scheduling, results sent back, reports written
and the workers idle at the tail; and each worker's peak RSS against the
largest peak of a separate ``mine`` of the dumps it mined; and how many
dumps had their caches mined on two workers (each opening the dump).

With ``--baseline DIR`` (another checkout, its extensions built in place, as
for bench_compare.py), that tree's ``dumpminer fleet`` runs in every round
too, and the two fleets are compared as a ratio of medians from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path.home() / ".cache" / "dumpminer" / "samples"
KERNELS = Path.home() / ".cache" / "dumpminer" / "kernels"
DUMPMINER = [sys.executable, "-m", "dumpminer"]


def fleet_dumps(count: int) -> list[str]:
    """The first *count* sample dumps: seeds of both series, then the pairs."""
    found: list[str] = []
    for sample in ("seed", "pair-old", "pair-new", "slub-debug"):
        for series in ("6.1", "6.12"):
            manifest = SAMPLES / series / sample / "manifest.json"
            if manifest.exists():
                found += sorted(d["path"] for d in json.loads(manifest.read_text())["dumps"])
    if len(found) < count:
        sys.exit(f"only {len(found)} sample dumps built; build more (sample_dumps/build.py)")
    return found[:count]


def timed(args: list[str], tree: Path = ROOT) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (KiB) and CPU seconds (its children's included) of one process."""
    started = time.monotonic()
    process = subprocess.Popen(args, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    if os.waitstatus_to_exitcode(status) not in (0, 14):
        sys.exit(
            f"{' '.join(args)} failed: {process.stderr.read().decode() if process.stderr else ''}"
        )
    return seconds, usage.ru_maxrss, usage.ru_utime + usage.ru_stime


def run_sequential(
    dumps: list[str], cache: list[str], work: Path
) -> tuple[float, dict[str, int], float]:
    """``dumpminer mine`` on each dump in turn: total wall seconds, peak RSS per dump, CPU."""
    total, peaks, cpu = 0.0, {}, 0.0
    for i, dump in enumerate(dumps):
        out = work / f"mine-{i}.json"
        seconds, peak, used = timed([*DUMPMINER, "mine", dump, "--debug-dir", str(KERNELS), *cache,
                               "--format", "json", "-o", str(out), "--quiet"])  # fmt: skip
        total += seconds
        cpu += used
        peaks[dump] = peak
    return total, peaks, cpu


def run_fleet(
    dumps: list[str], cache: list[str], work: Path, round_: int, tree: Path = ROOT
) -> dict[str, Any]:
    """One fleet run of *tree*, every dump mined: wall seconds and what its reports say."""
    name = f"fleet-{round_}-{'this' if tree == ROOT else 'baseline'}"
    out, report = work / name, work / f"{name}.json"
    seconds, _, cpu = timed([*DUMPMINER, "fleet", *dumps, "--debug-dir", str(KERNELS), *cache,
                        "--out", str(out), "--force", "--format", "json", "-o", str(report),
                        "--quiet"], tree)  # fmt: skip
    doc = json.loads(report.read_text())
    peaks: dict[str, int] = defaultdict(int)
    worker_dumps: dict[str, list[str]] = defaultdict(list)
    split = 0
    for entry in doc["dumps"]:
        fleet = json.loads(Path(entry["report"]).read_text())["fleet"]
        split += len(fleet.get("workers", ())) > 1
        for worker, peak in fleet["worker_peak_rss_kib"].items():
            peaks[worker] = max(peaks[worker], peak)
            worker_dumps[worker].append(entry["path"])
    return {"seconds": seconds, "cpu": cpu, "timing": doc["timing"], "peaks": peaks,
            "worker_dumps": worker_dumps, "failed": doc["summary"]["failed"],
            "split": split}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--dumps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", help="mine this cache (default: each dump's largest three)")
    parser.add_argument("--baseline", type=Path, help="another checkout's fleet, in each round")
    args = parser.parse_args()
    dumps = fleet_dumps(args.dumps)
    cache = ["--cache", args.cache] if args.cache else []
    cpus = len(os.sched_getaffinity(0))
    sequential: list[float] = []
    sequential_cpu: list[float] = []
    fleets: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    mine_peaks: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        for round_ in range(args.rounds):
            order = ["mine", "fleet"] if round_ % 2 == 0 else ["fleet", "mine"]
            if args.baseline:
                order.insert(1, "baseline")
            for name in order:
                if name == "mine":
                    seconds, peaks, cpu_used = run_sequential(dumps, cache, work)
                    sequential.append(seconds)
                    sequential_cpu.append(cpu_used)
                    mine_peaks = {d: max(p, mine_peaks.get(d, 0)) for d, p in peaks.items()}
                elif name == "baseline":
                    baselines.append(run_fleet(dumps, cache, work, round_, args.baseline))
                else:
                    fleets.append(run_fleet(dumps, cache, work, round_))
            print(f"round {round_ + 1}: mine in turn {sequential[-1]:.1f} s, "
                  f"fleet {fleets[-1]['seconds']:.1f} s", file=sys.stderr)  # fmt: skip
    fleet_times = [f["seconds"] for f in fleets]
    # Start-up: the process's start (imports, discovery) and the cluster's, to workers ready.
    startups = [
        f["seconds"] - f["timing"]["seconds"] + f["timing"]["start_seconds"] for f in fleets
    ]
    overheads = [
        ((f["seconds"] - start) * f["timing"]["workers"] - f["timing"]["task_seconds"]) / len(dumps)
        for f, start in zip(fleets, startups, strict=True)
    ]  # fmt: skip
    seq, flt = statistics.median(sequential), statistics.median(fleet_times)
    print(f"\n{len(dumps)} dumps ({', '.join(sorted({Path(d).parent.name for d in dumps}))}), "
          f"{'--cache ' + args.cache if args.cache else 'largest 3 caches'}, {cpus} CPUs, "
          f"{args.rounds} rounds\n")  # fmt: skip
    print("| program | median wall | runs |")
    print("|---|---:|---|")
    print(f"| `dumpminer mine` on each in turn | {seq:.1f} s | "
          f"{', '.join(f'{s:.1f}' for s in sequential)} |")  # fmt: skip
    print(f"| `dumpminer fleet` (embedded cluster, {fleets[0]['timing']['workers']} workers) | "
          f"{flt:.1f} s | {', '.join(f'{s:.1f}' for s in fleet_times)} |")  # fmt: skip
    print(
        f"\nspeed-up: {seq / flt:.2f}x (rounds: "
        f"{', '.join(f'{s / f:.2f}' for s, f in zip(sequential, fleet_times, strict=True))})"
    )
    if baselines:
        base_times = [b["seconds"] for b in baselines]
        base = statistics.median(base_times)
        print(f"baseline fleet ({args.baseline}): median {base:.1f} s "
              f"({', '.join(f'{t:.1f}' for t in base_times)}); "
              f"this fleet is {base / flt:.2f}x the baseline's speed")  # fmt: skip
        peaks = sorted(baselines[-1]["peaks"].values())
        print("baseline worker peaks: " + ", ".join(f"{p / 1024:.0f} MiB" for p in peaks))
    fleet_cpu = statistics.median(f["cpu"] for f in fleets)
    print(f"CPU seconds (user + sys, every process): mine in turn "
          f"{statistics.median(sequential_cpu):.1f}, fleet {fleet_cpu:.1f}")  # fmt: skip
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"start-up (process start to workers ready): median {statistics.median(startups):.2f} s")
    print(f"fleet overhead per dump: median {statistics.median(overheads):.3f} s "
          f"({', '.join(f'{o:.3f}' for o in overheads)})")  # fmt: skip
    print(f"dumps whose caches ran on two workers (each opening the dump): "
          f"{', '.join(str(f['split']) for f in fleets)} of {len(dumps)}")  # fmt: skip
    print("\n| worker | dumps | peak RSS | largest peak of a separate mine of its dumps |")
    print("|---|---:|---:|---:|")
    last = fleets[-1]
    for worker, peak in sorted(last["peaks"].items()):
        theirs = max(mine_peaks[d] for d in last["worker_dumps"][worker])
        print(f"| {worker} | {len(last['worker_dumps'][worker])} | {peak / 1024:.0f} MiB | "
              f"{theirs / 1024:.0f} MiB |")  # fmt: skip
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"\n(bench process itself: {own / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
