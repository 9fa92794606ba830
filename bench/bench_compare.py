"""
Benchmark: ``dumpminer mine`` end to end from two source trees, as a user runs
it (a fresh process: start-up, opening the dump, the walk, the report).

    python3 bench/bench_compare.py --baseline DIR [--sample big] [--series 6.1]
                                   [--cache kmalloc-32] [--format kdump] [--runs 5]
                                   [--counts]

DIR is another checkout of dumpminer with its extension built in place
(``git worktree add /tmp/base REV && cd /tmp/base && python3 setup.py
build_ext --inplace``). Each round runs both trees once, in alternating order,
so that a noisy neighbour slows both alike; the table gives each tree's median
wall time and peak RSS and the ratio of the medians, measured in the same run.
The timed runs print the default table (what a user reads); with ``--counts``
each tree then writes one untimed JSON report (every fragment and cluster,
which on a noisy dump takes longer than the mining) and the two reports'
cluster counts are compared: a speed-up that changes a count is a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sample_dumps.build import build_sample  # noqa: E402


def run_tree(
    tree: Path, args: list[str], out: Path, fmt: str = "table"
) -> tuple[float, float, float]:
    """
    Run ``dumpminer mine`` from *tree*; return (wall seconds, its peak RSS in
    MiB, its CPU seconds: user and system, all threads).
    """
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "dumpminer.cli", "mine", *args, "--format", fmt,
         "-o", str(out), "--quiet"],
        env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stderr is not None
    errors = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{tree}: exit {child.returncode}: {errors.strip()}")
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


@dataclass
class Measured:
    """The runs of one variant: wall and CPU seconds of each, and the highest peak RSS."""

    times: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    peak: float = 0.0


def alternate(variants: dict[str, tuple[Path, list[str], Path]], runs: int) -> dict[str, Measured]:
    """
    Run each variant, (tree, ``mine`` arguments, report file), once per round
    for *runs* rounds with :func:`run_tree`, in alternating order (a noisy
    neighbour then slows every variant alike); return what each measured.
    """
    measured = {name: Measured() for name in variants}
    for round_ in range(runs):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            seconds, peak, cpu = run_tree(*variants[name])
            measured[name].times.append(seconds)
            measured[name].cpus.append(cpu)
            measured[name].peak = max(measured[name].peak, peak)
    return measured


def clusters(path: Path) -> dict[str, int]:
    report: dict[str, Any] = json.loads(path.read_text())
    return {c["template"]: c["objects"] for c in report["clusters"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--baseline", required=True, type=Path)
    parser.add_argument("--sample", default="big")
    parser.add_argument("--series", default="6.1")
    parser.add_argument("--cache", default="kmalloc-32")
    parser.add_argument("--format", default="kdump", help="which dump of the sample")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--counts", action="store_true", help="compare cluster counts too")
    args = parser.parse_args()
    manifest = json.loads(Path(build_sample(args.sample, args.series)).read_text())
    vmcore = next(d["path"] for d in manifest["dumps"] if d["format"] == args.format)
    mine = [vmcore, "--vmlinux", manifest["vmlinux"], "--cache", args.cache]
    trees = {"baseline": args.baseline.resolve(), "this": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        outs = {name: Path(tmp) / f"{name}.json" for name in trees}
        measured = alternate({name: (trees[name], mine, outs[name]) for name in trees}, args.runs)
        counts = {}
        if args.counts:
            for name in trees:
                run_tree(trees[name], mine, outs[name], "json")
                counts[name] = clusters(outs[name])
    print(
        f"{args.sample} {args.series} {args.format} {args.cache}, {args.runs} rounds, "
        f"{manifest['kernel_release']}, load average {os.getloadavg()[0]:.1f}"
    )
    for name, tree in trees.items():
        m = measured[name]
        spread = f"{min(m.times):.2f}-{max(m.times):.2f}"
        print(
            f"  {name:8} {statistics.median(m.times):7.2f} s  ({spread})  "
            f"CPU {statistics.median(m.cpus):6.2f} s  peak RSS {m.peak:6.0f} MiB  {tree}"
        )
    this, base = measured["this"], measured["baseline"]
    ratio = statistics.median(this.times) / statistics.median(base.times)
    cpu_ratio = statistics.median(this.cpus) / statistics.median(base.cpus)
    print(f"  this / baseline: {ratio:.3f} wall, {cpu_ratio:.3f} CPU")
    if counts:
        lost = {t: n for t, n in counts["baseline"].items() if counts["this"].get(t, n) != n}
        print(f"  clusters whose template is in both and whose count differs: {len(lost)}")
        only = set(counts["baseline"]) ^ set(counts["this"])
        print(f"  templates in one report only: {len(only)}")


if __name__ == "__main__":
    main()
