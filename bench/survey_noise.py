"""
Survey of pointer bytes and binary fields on real dumps: what leaving out
kernel-pointer words takes away, and what the string rule (dumpminer.clustering.noise)
sinks, in every slab cache of each sample.

    python3 bench/survey_noise.py MANIFEST [MANIFEST ...] [--min-length 3] [--json OUT]

For each sample manifest (sample_dumps/build.py), reads every allocated object
of every slab cache of its kdump dump with drgn's own helpers (no dumpminer
walk), and prints per sample:

- runs lying entirely inside an aligned word holding a kernel address (pointer
  bytes: left out), and runs that cross into such a word from the word before
  (cut where the word starts), with every distinct crossing run, so that a
  reader can see whether a string ever lost a byte;
- per cache, the distinct texts (pointer words blanked) that the string rule
  sinks, with how many of them are NUL-terminated and at least 4 bytes long:
  real strings lost. docs/clustering.md and docs/extraction.md quote its output.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import drgn
from drgn.helpers.linux.slab import for_each_slab_cache, slab_cache_for_each_allocated_object

from dumpminer.clustering.noise import RunShape, sinks

KERNEL_HALF = 0xFFFF_8000_0000_0000
RUN = re.compile(rb"[\x20-\x7e]+")


def _open(manifest: dict[str, Any]) -> drgn.Program:
    vmcore = next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump")
    # The host platform: libkdumpfile cannot tell the architecture of QEMU's kdump files.
    prog = drgn.Program(drgn.host_platform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog.set_core_dump(vmcore)
    prog.load_debug_info([manifest["vmlinux"]])
    return prog


def survey(manifest: dict[str, Any], min_length: int) -> dict[str, Any]:
    """The counts of one sample (see the module docstring)."""
    prog = _open(manifest)
    inside = 0
    crossing: Counter[tuple[str, str, str]] = Counter()
    caches: dict[str, Any] = {}
    for cache in for_each_slab_cache(prog):
        name = cache.name.string_().decode()
        size = cache.object_size.value_()
        # text -> [objects, runs, NUL-terminated runs, offsets]
        texts: dict[bytes, list[Any]] = defaultdict(lambda: [0, 0, 0, set()])
        try:
            objects = list(slab_cache_for_each_allocated_object(cache, "void"))
        except (drgn.FaultError, ValueError, LookupError):
            continue
        for obj in objects:
            try:
                data = bytearray(prog.read(obj.value_(), size))
            except drgn.FaultError:
                continue
            words = [
                at
                for at in range(0, size - size % 8, 8)
                if int.from_bytes(data[at : at + 8], "little") >= KERNEL_HALF
            ]
            pointer = set(words)
            for m in RUN.finditer(data):
                start, end = m.span()
                if end - start < min_length:
                    continue
                first, last = start // 8 * 8, (end - 1) // 8 * 8
                if first == last and first in pointer:
                    inside += 1
                elif any(w in pointer for w in range(first + 8, last + 8, 8)):
                    cut = min(w for w in range(first + 8, last + 8, 8) if w in pointer) - start
                    run = m.group().decode()
                    crossing[name, run[:cut], run[cut:]] += 1
            for at in words:
                data[at : at + 8] = bytes(8)
            seen = set()
            for m in RUN.finditer(data):
                start, end = m.span()
                if end - start < min_length:
                    continue
                entry = texts[m.group()]
                entry[1] += 1
                entry[2] += end < size and data[end] == 0
                entry[3].add(start)
                if m.group() not in seen:
                    seen.add(m.group())
                    entry[0] += 1
        shapes = [
            RunShape(text, objects, runs, nul, len(offsets))
            for text, (objects, runs, nul, offsets) in texts.items()
        ]
        sunk = [s for s in shapes if sinks(s)]
        # The most objects a text the rule keeps holds: sunk texts above it
        # are rows the rule moved down.
        top_kept = max((s.objects for s in shapes if not sinks(s)), default=0)
        caches[name] = {
            "objects": len(objects),
            "texts": len(shapes),
            "sunk": len(sunk),
            "sunk_objects": sum(s.objects for s in sunk),
            # Sunk although NUL-terminated (most runs): of 4 bytes or more
            # (the target: none), and of fewer.
            "lost": sorted(
                (s.text.decode(), s.objects)
                for s in sunk
                if len(s.text) >= 4 and 2 * s.nul_terminated > s.runs
            ),
            "short_terminated": sorted(
                ((s.text.decode(), s.objects) for s in sunk if 2 * s.nul_terminated > s.runs),
                key=lambda t: -t[1],
            ),
            "sunk_over_kept": [(s.text.decode(), s.objects) for s in sunk if s.objects > top_kept],
            "top_sunk": [
                (s.text.decode(), s.objects) for s in sorted(sunk, key=lambda s: -s.objects)[:5]
            ],
            "top_kept": [
                (s.text.decode(), s.objects)
                for s in sorted((s for s in shapes if not sinks(s)), key=lambda s: -s.objects)[:5]
            ],
        }
    return {
        "sample": f"{manifest['sample']} {manifest['series']}",
        "inside": inside,
        "crossing": [[*key, n] for key, n in crossing.most_common()],
        "caches": caches,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--min-length", type=int, default=3)
    parser.add_argument("--json", help="write every count here too")
    args = parser.parse_args()
    results = []
    for path in args.manifests:
        result = survey(json.loads(Path(path).read_text()), args.min_length)
        results.append(result)
        caches = result["caches"]
        print(f"== {result['sample']}: {len(caches)} caches, "
              f"{sum(c['objects'] for c in caches.values())} objects")  # fmt: skip
        print(f"runs inside kernel-pointer words (left out): {result['inside']}")
        print(f"runs crossing into one (cut at the word): {sum(n for *_, n in result['crossing'])}")
        for cache, before, after, n in result["crossing"]:
            print(f"   {n:6}  {cache:24} {before!r} | {after!r}")
        texts = sum(c["texts"] for c in caches.values())
        sunk = sum(c["sunk"] for c in caches.values())
        lost = [(name, *t) for name, c in caches.items() for t in c["lost"]]
        print(f"distinct texts per cache, summed: {texts}; sunk by the string rule: {sunk}")
        print(f"sunk although NUL-terminated and 4 bytes or more: {len(lost)}")
        for name, text, objects in lost:
            print(f"   {name:24} {text!r} ({objects} objects)")
        short = [(name, *t) for name, c in caches.items() for t in c["short_terminated"]]
        print(f"sunk, NUL-terminated, shorter than 4 bytes: {len(short)} distinct texts in "
              f"{sum(t[2] for t in short)} objects; the most common:")  # fmt: skip
        for name, text, objects in sorted(short, key=lambda t: -t[2])[:15]:
            print(f"   {name:24} {text!r} ({objects} objects)")
        print("caches where a sunk text held more objects than any text kept (rows moved down):")
        for name, c in caches.items():
            if c["sunk_over_kept"]:
                moved, kept = c["sunk_over_kept"][:6], c["top_kept"][:3]
                print(f"   {name:24} moved: {moved}; first kept: {kept}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
