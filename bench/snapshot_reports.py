#!/usr/bin/env python3
"""
Snapshot every report dumpminer writes for the sample dumps, to compare two trees.

A refactoring must leave reports byte-identical: run this with the old
tree's console script and with the new one's, then ``diff -r`` the two
folders. Run times (``seconds``, ``0.17 s``) are blanked, nothing else.

    python bench/snapshot_reports.py --dumpminer OLD/.venv/bin/dumpminer --out /tmp/old
    python bench/snapshot_reports.py --dumpminer NEW/.venv/bin/dumpminer --out /tmp/new
    diff -r /tmp/old /tmp/new

It reads the samples already built in the sample cache (seed on every
series there is, slub-debug, the diff pair); it builds nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CACHES = ("kmalloc-32", "kmalloc-64", "kmalloc-96", "kmalloc-128")
FORMATS = ("table", "json", "csv", "markdown", "html")

#: Run times, the only part of a report that differs from run to run.
_TIMES = [
    (re.compile(rb'"(seconds|cpu_seconds|[a-z_]*_seconds)": [0-9.e-]+'), rb'"\1": T'),
    (re.compile(rb"\b[0-9]+\.[0-9]+ ?s\b"), b"T s"),
    (re.compile(rb"\b[0-9]+ ms\b"), b"T ms"),
]


def blank_times(data: bytes) -> bytes:
    """Replace run times by ``T``."""
    for pattern, replacement in _TIMES:
        data = pattern.sub(replacement, data)
    return data


def manifests(cache: Path) -> dict[str, dict[str, Any]]:
    """Every built sample manifest in the cache, by "series/sample"."""
    found = {}
    for path in sorted(cache.glob("samples/*/*/manifest.json")):
        manifest = json.loads(path.read_text())
        if "dumps" in manifest:
            # A copied cache: the dumps are beside their manifest.
            for dump in manifest["dumps"]:
                dump["path"] = str(path.parent / Path(dump["path"]).name)
            found[f"{manifest['series']}/{manifest['sample']}"] = manifest
    return found


def commands(found: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Output name -> dumpminer arguments."""
    out: dict[str, list[str]] = {}
    for name, manifest in found.items():
        tag = name.replace("/", "_")
        vmlinux = manifest["vmlinux"]
        dumps = {d["format"]: d["path"] for d in manifest["dumps"]}
        for fmt, path in dumps.items():
            out[f"{tag}.{fmt}.info"] = ["info", path]
            out[f"{tag}.{fmt}.info.json"] = ["info", path, "--format", "json"]
            for cache in CACHES:
                out[f"{tag}.{fmt}.{cache}.json"] = [
                    "mine", path, "--vmlinux", vmlinux, "--cache", cache, "--format", "json",
                ]
        kdump = dumps.get("kdump") or next(iter(dumps.values()))
        base = ["mine", kdump, "--vmlinux", vmlinux]
        for cache in CACHES:
            for fmt in FORMATS:
                out[f"{tag}.kdump.{cache}.out.{fmt}"] = [*base, "--cache", cache, "--format", fmt]
        out[f"{tag}.kdump.default.table"] = base
        out[f"{tag}.kdump.context.json"] = [*base, "--cache", "kmalloc-32", "--context", "64",
                                            "--format", "json"]
        out[f"{tag}.kdump.sample.json"] = [*base, "--cache", "kmalloc-32", "--sample", "0.1",
                                           "--format", "json"]
        out[f"{tag}.kdump.nodebuginfo.json"] = ["mine", kdump, "--no-debuginfo", "--cache",
                                                "kmalloc-32", "--format", "json"]
        out[f"{tag}.kdump.mask.table"] = [*base, "--cache", "kmalloc-64", "--mask-pointers"]
        out[f"{tag}.kdump.keep.table"] = [*base, "--cache", "kmalloc-64", "--keep-pointers"]
        out[f"{tag}.kdump.top1.json"] = [*base, "--cache", "kmalloc-128", "--top", "1",
                                         "--format", "json"]
        for fmt in ("table", "json", "csv", "markdown"):
            out[f"{tag}.kdump.caches.{fmt}"] = ["caches", kdump, "--vmlinux", vmlinux,
                                                "--format", fmt]
    pairs = {n.split("/")[0] for n in found if n.endswith("/pair-old")}
    for series in sorted(pairs):
        old, new = found[f"{series}/pair-old"], found.get(f"{series}/pair-new")
        if new is None:
            continue
        old_dump = next(d["path"] for d in old["dumps"] if d["format"] == "kdump")
        new_dump = next(d["path"] for d in new["dumps"] if d["format"] == "kdump")
        for fmt in ("table", "json", "csv", "markdown", "html"):
            out[f"{series}_pair.diff.{fmt}"] = ["diff", old_dump, new_dump, "--vmlinux",
                                                old["vmlinux"], "--cache", "kmalloc-32",
                                                "--format", fmt]
    return out


def run(dumpminer: str, name: str, args: list[str], out: Path) -> None:
    """Run one command; write its stdout (times blanked) and its exit code."""
    done = subprocess.run([dumpminer, *args], capture_output=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})
    (out / name).write_bytes(blank_times(done.stdout))
    (out / f"{name}.rc").write_text(f"{done.returncode}\n{blank_times(done.stderr).decode()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--dumpminer", required=True, help="the console script to run")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("DUMPMINER_CACHE",
                                                    "~/.cache/dumpminer")).expanduser())
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    todo = commands(manifests(args.cache_dir))
    print(f"{len(todo)} reports -> {args.out}", file=sys.stderr)
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(run, args.dumpminer, n, a, args.out) for n, a in todo.items()]:
            future.result()


if __name__ == "__main__":
    main()
