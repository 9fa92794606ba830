"""
Benchmark: opening a sample dump with its vmlinux (DWARF) and without one
(the kernel's BTF and kallsyms), each in fresh processes.

    python3 bench/bench_open.py [--sample seed] [--series 6.1] [--runs 7]

Each run is a new Python process that imports dumpminer (not timed) and
then times ``open_dump`` and, apart, the first ``slab_info`` (the first type
and object lookups, where DWARF and BTF differ most). Without a vmlinux it
also times the steps: kallsyms decoded, BTF read from the dump, BTF parsed.
Modes and dump formats interleave, so a noisy neighbour slows them alike.
It prints medians and spreads per format and mode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODES = ("btf+kallsyms", "vmlinux")


def child(mode: str, vmcore: str, vmlinux: str) -> None:
    """One measurement, printed as JSON on stdout."""
    import dumpminer.dump.kallsyms as kallsyms_module
    import dumpminer.dump.open as dump_module
    from dumpminer.dump.btf import KernelBtf
    from dumpminer.slub.slabinfo import slab_info

    steps: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                steps[name] = steps.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    dump_module.load_kallsyms = timed("kallsyms", kallsyms_module.load_kallsyms)  # type: ignore[attr-defined]
    dump_module.KernelBtf = timed("btf_parse", KernelBtf)  # type: ignore[misc]
    started = time.perf_counter()
    if mode == "vmlinux":
        dump = dump_module.open_dump(vmcore, vmlinux)
    else:
        dump = dump_module.open_dump(vmcore, use_vmlinux=False)
    opened = time.perf_counter() - started
    started = time.perf_counter()
    caches = len(slab_info(dump.prog).caches)
    first_use = time.perf_counter() - started
    print(json.dumps({"open": opened, "slab_info": first_use, "caches": caches, **steps}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sample", default="seed")
    parser.add_argument("--series", default="6.1")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    from sample_dumps.build import build_sample

    with open(build_sample(args.sample, args.series)) as f:
        manifest = json.load(f)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.runs):
        for dump in manifest["dumps"]:
            for mode in MODES:
                done = subprocess.run(
                    [sys.executable, __file__, "--child", mode, dump["path"], manifest["vmlinux"]],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                results.setdefault((dump["format"], mode), []).append(json.loads(done.stdout))
    print(f"{args.sample} {args.series} ({manifest['kernel_release']}), {args.runs} runs each")
    print(f"{'format':14} {'mode':13} {'open':>16} {'slab_info':>9} steps (medians)")
    for (fmt, mode), runs in results.items():
        opened = sorted(r["open"] for r in runs)
        first = statistics.median(r["slab_info"] for r in runs)
        steps = " ".join(
            f"{name} {statistics.median(r[name] for r in runs):.3f}"
            for name in ("kallsyms", "btf_parse")
            if name in runs[0]
        )
        spread = f"{statistics.median(opened):.3f} ({opened[0]:.2f}-{opened[-1]:.2f})"
        print(f"{fmt:14} {mode:13} {spread:>16} {first:9.3f} {steps}")


if __name__ == "__main__":
    main()
