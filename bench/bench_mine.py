"""
Benchmark: mining kmalloc-32 of a sample dump, against drgn's helper loop and
against the floor of reading the cache's slabs once.

    python3 bench/bench_mine.py [--sample big] [--series 6.1] [--runs 3] [--end-to-end]

Each program runs in its own process, once per round, and the rounds
interleave the programs, so that a noisy neighbour slows all of them alike.
Programs are timed after the dump is opened; with ``--end-to-end``, the whole
process is timed from the parent (start-up, imports, opening the dump), and
``e-dumpminer-cli`` (``dumpminer mine`` as a user runs it) is one of them.
It prints, per program, the median wall time, its spread, objects per second
and peak RSS, and the ratios that the speed targets are stated in, all
measured in the same run. Build the sample first:
``python3 sample_dumps/build.py --sample big``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import Counter
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CACHE = "kmalloc-32"


def _open(vmcore: str, vmlinux: str) -> Any:
    from dumpminer.dump.open import open_dump

    return open_dump(vmcore, vmlinux)


def program_helper_loop(dump: Any) -> int:
    """(a) drgn's helper loop: one read per object, printable runs counted."""
    from drgn.helpers.linux.slab import find_slab_cache, slab_cache_for_each_allocated_object

    from dumpminer.extract.fragments import printable_runs

    prog = dump.prog
    slab_cache = find_slab_cache(prog, CACHE)
    size = slab_cache.object_size.value_()
    counts: Counter[bytes] = Counter()
    n = 0
    for obj in slab_cache_for_each_allocated_object(slab_cache, "void"):
        counts.update({text for _, text in printable_runs(prog.read(obj.value_(), size))})
        n += 1
    return n


def program_dumpminer(dump: Any) -> int:
    """(b) dumpminer's exact mode, the library call behind ``dumpminer mine``."""
    import dumpminer

    report = dumpminer.mine(dump.prog, CACHE, dump=dump, workers=1)
    return int(report.scan.objects_scanned)


def program_dumpminer_2_workers(dump: Any) -> int:
    """(b2) dumpminer's exact mode split over two worker processes."""
    import dumpminer

    report = dumpminer.mine(dump.prog, CACHE, dump=dump, workers=2)
    return int(report.scan.objects_scanned)


def program_sample(dump: Any) -> int:
    """(c) dumpminer with ``--sample 0.1``: a tenth of the slabs."""
    import dumpminer
    from dumpminer.slub.sampling import SampleSpec

    report = dumpminer.mine(dump.prog, CACHE, dump=dump, sample=SampleSpec(fraction=0.1))
    return int(report.scan.objects_scanned)


def program_floor(dump: Any) -> int:
    """(d) the floor: find the cache's slab pages in bulk and read each slab once."""
    from drgn.helpers.linux.mm import pfn_to_virt
    from drgn.helpers.linux.slab import find_slab_cache

    from dumpminer.slub.walk import WalkStats, find_slab_pages

    prog = dump.prog
    slab_cache = find_slab_cache(prog, CACHE)
    stride = slab_cache.size.value_()
    pages = find_slab_pages(prog, {slab_cache.value_()}, WalkStats())
    shift = prog["PAGE_SHIFT"].value_()
    virt0 = pfn_to_virt(prog, 0).value_()
    n = 0
    for page in pages:
        prog.read(virt0 + (page.pfn << shift), page.objects * stride)
        n += page.objects
    return n


def cli_command(vmcore: str, vmlinux: str, extra: list[str]) -> list[str]:
    """
    (e) ``dumpminer mine`` as a user runs it, with *extra* arguments: the
    console script of this interpreter's environment (``python -m
    dumpminer`` if it has none), the table to /dev/null.
    """
    script = os.path.join(os.path.dirname(sys.executable), "dumpminer")
    start = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "dumpminer"]
    return [*start, "mine", vmcore, "--vmlinux", vmlinux, "--cache", CACHE, "-o", os.devnull,
            "--quiet", *extra]  # fmt: skip


def compile_bytecode() -> None:
    """
    Compile dumpminer's modules to bytecode, as ``pip install`` does: a
    checkout installed in editable mode compiles them on first import, or on
    every import where ``PYTHONDONTWRITEBYTECODE`` is set (about 0.08 s).
    """
    import compileall

    compileall.compile_dir(os.path.join(ROOT, "dumpminer"), quiet=1)


PROGRAMS = {
    "a-drgn-helpers": program_helper_loop,
    "b-dumpminer": program_dumpminer,
    "b2-dumpminer-2w": program_dumpminer_2_workers,
    "c-sample-0.1": program_sample,
    "d-floor": program_floor,
}


def child(name: str, vmcore: str, vmlinux: str) -> None:
    """Run one program in this process and print its measurements as JSON."""
    dump = _open(vmcore, vmlinux)
    started = time.perf_counter()
    objects = PROGRAMS[name](dump)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "objects": objects, "peak_rss_mib": peak_kib / 1024}))


def _manifest(sample: str, series: str) -> dict[str, Any]:
    from sample_dumps.build import build_sample

    path = build_sample(sample, series)
    with open(path) as f:
        return dict(json.load(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sample", default="big")
    parser.add_argument("--series", default="6.1")
    parser.add_argument("--format", default="kdump", help="which dump of the sample")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], help="programs to leave out")
    parser.add_argument(
        "--end-to-end", action="store_true", help="time whole processes, start-up included"
    )
    parser.add_argument(
        "--cli-arg",
        action="append",
        default=[],
        help="an argument for e-dumpminer-cli's dumpminer mine (e.g. --cli-arg=--mask-pointers)",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    manifest = _manifest(args.sample, args.series)
    vmcore = next(d["path"] for d in manifest["dumps"] if d["format"] == args.format)
    compile_bytecode()
    names = [n for n in PROGRAMS if n not in args.skip]
    if args.end_to_end and "e-dumpminer-cli" not in args.skip:
        names.append("e-dumpminer-cli")
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for round_ in range(args.runs):
        for name in names:
            cli = name == "e-dumpminer-cli"
            started = time.perf_counter()
            child_process = subprocess.Popen(
                cli_command(vmcore, manifest["vmlinux"], args.cli_arg)
                if cli
                else [sys.executable, __file__, "--child", name, vmcore, manifest["vmlinux"]],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child_process.stdout is not None
            output = child_process.stdout.read()
            _, status, usage = os.wait4(child_process.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"{name} failed")
            result = {"objects": 0} if cli else json.loads(output.strip().splitlines()[-1])
            result["cpu"] = usage.ru_utime + usage.ru_stime
            result["peak_rss_mib"] = usage.ru_maxrss / 1024
            if args.end_to_end:
                result["seconds"] = time.perf_counter() - started
            results[name].append(result)
            print(f"round {round_ + 1} {name}: {results[name][-1]}", file=sys.stderr)
    print(f"sample {args.sample} ({args.series}, {args.format}): {vmcore}")
    print(
        f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, load average "
        f"{os.getloadavg()[0]:.1f}, {'end to end' if args.end_to_end else 'after opening'}"
    )
    medians = {}
    for name in names:
        times = [r["seconds"] for r in results[name]]
        medians[name] = statistics.median(times)
        objects = max(r["objects"] for r in results[name])
        peak = max(r["peak_rss_mib"] for r in results[name])
        cpu = statistics.median(r["cpu"] for r in results[name])
        print(
            f"{name:16} median {medians[name]:7.2f} s"
            f"  (min {min(times):.2f}, max {max(times):.2f})  CPU {cpu:6.2f} s"
            + (
                f"  {objects / medians[name] / 1e3:8.0f} k obj/s  objects {objects}"
                if objects
                else ""
            )
            + f"  peak {peak:.0f} MiB"
        )
    for name in ("b-dumpminer", "e-dumpminer-cli"):
        if "a-drgn-helpers" in medians and name in medians:
            ratio = medians["a-drgn-helpers"] / medians[name]
            print(f"speed-up of {name} over drgn helpers: {ratio:.1f}x")
    for name in ("b-dumpminer", "b2-dumpminer-2w", "c-sample-0.1"):
        if "d-floor" in medians and name in medians:
            print(f"{name} / floor: {medians[name] / medians['d-floor']:.2f}x")


if __name__ == "__main__":
    main()
