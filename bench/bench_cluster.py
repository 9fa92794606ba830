"""
Benchmark: clustering a million distinct fragments, and a tally folding them.

    python3 bench/bench_cluster.py [--fragments 1000000] [--runs 3]

The fragments are a mix such as a large leaking cache holds: names that vary
in words (``/var/lib/agent/<name>.state``), ids that vary in numbers
(``req-<NUM>``), and pointer-byte noise (random printable runs of 3 to 8
bytes). Each run builds them afresh (seeded), then times
:func:`dumpminer.clustering.cluster.cluster_fragments` on all of them, and a
:class:`dumpminer.clustering.tally.FragmentTally` with room for a tenth of them fed
the same texts as one-object rows in 16 MiB batches (the fold path). It
prints the medians and checks that both ways give the same template counts.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dumpminer.clustering.cluster import cluster_fragments
from dumpminer.clustering.tally import FragmentTally
from dumpminer.extract.fragments import Fragment

CONSONANTS, VOWELS = "bdfgklmnprstvz", "aeiou"
WIDTH = 48


def fragment_texts(n: int, seed: int = 1) -> list[bytes]:
    """*n* distinct texts: 40% word-varying names, 30% numbered ids, 30% noise."""
    rnd = random.Random(seed)
    texts: set[bytes] = set()
    names = int(n * 0.4)
    for i in range(names):
        name = "".join(CONSONANTS[(i // 70**k) % 14] + VOWELS[(i // 70**k // 14) % 5]
                       for k in range(4))  # fmt: skip
        texts.add(f"/var/lib/agent/{name}.state".encode())
    for i in range(int(n * 0.3)):
        texts.add(b"req-%07d" % i)
    while len(texts) < n:
        texts.add(bytes(rnd.randrange(0x21, 0x7F) for _ in range(rnd.randrange(3, 9))))
    return sorted(texts)


def run_once(texts: list[bytes]) -> tuple[float, float, dict[bytes, int], dict[bytes, int]]:
    fragments = [Fragment(t, 1, 1, 0, {16: 1}, [0x1000 + 64 * i]) for i, t in enumerate(texts)]
    start = time.perf_counter()
    clusters = cluster_fragments(fragments)
    clustered = time.perf_counter() - start
    direct = {c.template: c.objects for c in clusters}
    rows = np.zeros((len(texts), WIDTH), np.uint8)
    for i, text in enumerate(texts):
        rows[i, 1 : 1 + len(text)] = np.frombuffer(text, np.uint8)
    addresses = np.arange(len(texts), dtype=np.uint64) * 64 + 0x1000
    tally = FragmentTally(len(texts) // 10)
    per_batch = (16 << 20) // WIDTH
    start = time.perf_counter()
    for lo in range(0, len(texts), per_batch):
        tally.add_objects(rows[lo : lo + per_batch], addresses[lo : lo + per_batch], 3)
    folded_clusters = cluster_fragments(list(tally.fragments.values()), tally.templates)
    folded = time.perf_counter() - start
    via_tally = {c.template: c.objects for c in folded_clusters}
    return clustered, folded, direct, via_tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--fragments", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    texts = fragment_texts(args.fragments)
    direct_times, fold_times = [], []
    for _ in range(args.runs):
        clustered, folded, direct, via_tally = run_once(texts)
        direct_times.append(clustered)
        fold_times.append(folded)
    top = Counter(direct).most_common(3)
    print(
        f"{len(texts)} distinct fragments, {len(direct)} clusters; top: "
        + ", ".join(f"{t.decode()!r} {n}" for t, n in top)
    )
    print(
        f"  cluster_fragments        median {statistics.median(direct_times):6.2f} s "
        f"({min(direct_times):.2f}-{max(direct_times):.2f})"
    )
    print(
        f"  tally, room for a tenth  median {statistics.median(fold_times):6.2f} s "
        f"({min(fold_times):.2f}-{max(fold_times):.2f}), incl. extraction and clustering"
    )
    same = all(via_tally.get(t) == n for t, n in top)
    print(f"  top templates' counts equal through the bounded tally: {same}")


if __name__ == "__main__":
    main()
