"""
Survey of word-slot merges on real dumps: what the clustering thresholds
(dumpminer.clustering.cluster.MIN_DISTINCT, MIN_FIXED_CHARS) merge in every cache.

    python3 bench/survey_clusters.py MANIFEST [MANIFEST ...] [--distinct 2 3 4] [--fixed 3 4 5]

For each sample manifest (sample_dumps/build.py), mines every slab cache of
its kdump dump once, then re-clusters the fragments under each pair of
thresholds and prints, per pair, how many word-slot clusters formed, how many
fragments they took in, and each template with its object count and top
values. docs/clustering.md quotes its output.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import drgn
from drgn.helpers.linux.slab import for_each_slab_cache

import dumpminer
from dumpminer.clustering import cluster
from dumpminer.errors import DumpminerError


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("manifests", nargs="+")
    parser.add_argument("--distinct", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--fixed", type=int, nargs="+", default=[3, 4, 5])
    args = parser.parse_args()
    for path in args.manifests:
        manifest = json.loads(Path(path).read_text())
        vmcore = next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump")
        print(
            f"== {manifest['sample']} {manifest['kernel_release']} "
            f"{manifest.get('boot_options') or ''}"
        )
        dump = dumpminer.open_dump(vmcore, manifest["vmlinux"])
        names = sorted(c.name.string_().decode() for c in for_each_slab_cache(dump.prog))
        mined = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in names:
                try:
                    report = dumpminer.mine(dump.prog, name)
                except (drgn.FaultError, DumpminerError) as error:
                    print(f"  {name}: skipped ({error})")
                    continue
                mined.append((name, report.fragments))
        total = sum(len(f) for _, f in mined)
        print(f"  {len(mined)} caches, {total} distinct fragments")
        for distinct in args.distinct:
            for fixed in args.fixed:
                cluster.MIN_DISTINCT, cluster.MIN_FIXED_CHARS = distinct, fixed
                lines, members = [], 0
                for name, fragments in mined:
                    for c in cluster.cluster_fragments(fragments):
                        if any(s.kind == "word" for s in c.slots):
                            members += len(c.members)
                            top = ", ".join(v.decode() for v, _ in c.slots[0].top[:3])
                            lines.append(
                                f"    {name:24} {c.objects:6} "
                                f"{len(c.members):5}  {c.template.decode()!r}  [{top}]"
                            )
                print(
                    f"  MIN_DISTINCT={distinct} MIN_FIXED_CHARS={fixed}: "
                    f"{len(lines)} word clusters of {members} fragments"
                )
                if (distinct == cluster.MIN_DISTINCT and fixed in args.fixed[:1]) or len(
                    lines
                ) < 60:
                    print("\n".join(lines))


if __name__ == "__main__":
    main()
