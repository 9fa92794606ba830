#!/usr/bin/env python3
"""
drgn's start-up with and without dumpminer's plugin loaded.

Installing dumpminer registers a ``drgn.plugins`` entry point, so every drgn
session of its user imports :mod:`dumpminer.drgn_plugin` when it creates a
program. This runs ``drgn -q -c ELF -s VMLINUX -e pass`` (a fresh process,
as a user starts drgn) in alternating rounds with the plugin enabled and
with ``DRGN_DISABLE_PLUGINS=dumpminer``, and prints the medians and their
ratio, measured in the same run.

    python bench/bench_plugin_startup.py --runs 15
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sample_dumps.build import build_sample


def started(drgn: str, vmcore: str, vmlinux: str, env: dict[str, str]) -> float:
    """Seconds for one drgn process to open the dump, run nothing and exit."""
    begin = time.perf_counter()
    subprocess.run(
        [drgn, "-q", "-c", vmcore, "-s", vmlinux, "-e", "pass"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--series", default="6.1")
    args = parser.parse_args()
    manifest = json.loads(Path(build_sample("seed", args.series)).read_text())
    vmcore = next(d["path"] for d in manifest["dumps"] if d["format"] == "elf")
    drgn = shutil.which("drgn") or os.path.join(os.path.dirname(sys.executable), "drgn")
    with_plugin = dict(os.environ, DRGN_PLUGINS="dumpminer=dumpminer.drgn_plugin")
    without = dict(os.environ, DRGN_DISABLE_PLUGINS="dumpminer")
    without.pop("DRGN_PLUGINS", None)
    times: dict[str, list[float]] = {"with dumpminer": [], "without": []}
    for _ in range(args.runs):
        times["with dumpminer"].append(started(drgn, vmcore, manifest["vmlinux"], with_plugin))
        times["without"].append(started(drgn, vmcore, manifest["vmlinux"], without))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        spread = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
        print(f"{name:15} median {value:.3f} s ({spread}, {args.runs} runs)")
    print(f"ratio with/without: {medians['with dumpminer'] / medians['without']:.3f}")


if __name__ == "__main__":
    main()
