"""
Benchmark: the tally and the clustering of one mine, replayed from its batches,
in two source trees: CPU seconds per phase, and whether the clusters are equal.

    python3 bench/bench_tally.py --baseline DIR [--sample huge] [--series 6.1]
                                 [--cache kmalloc-32] [--runs 3]

End to end (bench/bench_compare.py) the walk's reads and the neighbours' load
blur what the tally costs; here the batches a ``mine`` of the sample's kdump
fed its tally are recorded once (pickled next to the dump, in
``$TMPDIR``), then each tree, in a fresh process per round, feeds them to its
own ``FragmentTally`` (default bound), builds the fragments and clusters them
as ``mine`` does. Printed per tree: median CPU seconds of the three phases
(absorb: the batches, folds and drops; fragments: the report's ``Fragment``
objects, sorted; cluster: ``cluster_fragments``), the share of it spent in
Python's cycle collector, and a digest of every cluster (template, counts,
offsets, examples, slots, members): equal digests, equal reports.

DIR is another checkout with its extension built in place. Trees from before
issue 10 (a505b58, whose tally lives in dumpminer/extract/fragments.py) are handled.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sample_dumps.build import build_sample  # noqa: E402

# Runs in the tree under test (PYTHONPATH=tree): prints one JSON line.
REPLAY = r"""
import gc, hashlib, json, pickle, sys, time
try:
    from dumpminer.clustering.tally import FragmentTally
except ImportError:  # before issue 10
    from dumpminer.extract.fragments import FragmentTally
from dumpminer.clustering.cluster import cluster_fragments, sort_fragments

with open(sys.argv[1], "rb") as f:
    batches = pickle.load(f)
collecting = [0.0, 0.0]
def note(phase, info):
    if phase == "start":
        collecting[1] = time.process_time()
    else:
        collecting[0] += time.process_time() - collecting[1]
gc.callbacks.append(note)
out = {}
def phase(name, step):
    gc_before, start = collecting[0], time.process_time()
    result = step()
    out[name] = time.process_time() - start
    out[name + "_gc"] = collecting[0] - gc_before
    return result
tally = FragmentTally()
phase("absorb", lambda: [tally.absorb(b) for b in batches])
fragments = phase("fragments", lambda: sort_fragments(tally.fragments.values()))
if hasattr(tally, "templates"):
    masks = tally.known_masks() if hasattr(tally, "known_masks") else None
    clusters = phase("cluster", lambda: cluster_fragments(fragments, tally.templates, masks))
else:
    clusters = phase("cluster", lambda: cluster_fragments(fragments))
digest = hashlib.sha256()
for c in clusters:
    slots = [(s.kind, s.distinct, s.distinct_exact, s.top) for s in getattr(c, "slots", ())]
    digest.update(repr((
        c.template, c.objects, c.occurrences, c.in_context, sorted(c.offsets.items()),
        c.examples, getattr(c, "distinct_members", None), getattr(c, "folded", None), slots,
        [m.text for m in c.members],
    )).encode())
out["digest"] = digest.hexdigest()[:16]
out["clusters"] = len(clusters)
print(json.dumps(out))
"""

# Runs in this tree: mines the cache and pickles every batch its tally absorbed.
RECORD = r"""
import pickle, sys
from dumpminer.clustering import tally
from dumpminer.cli import main
batches = []
absorb = tally.FragmentTally.absorb
def recording(self, counts):
    batches.append(counts)
    absorb(self, counts)
tally.FragmentTally.absorb = recording
vmcore, vmlinux, cache, out = sys.argv[1:5]
try:
    main(["mine", vmcore, "--vmlinux", vmlinux, "--cache", cache, "-o", out + ".txt", "--quiet"])
except SystemExit:
    pass
with open(out, "wb") as f:
    pickle.dump(batches, f, protocol=5)
"""

PHASES = ("absorb", "fragments", "cluster")


def record(manifest: dict[str, object], cache: str) -> Path:
    """The pickled batches of a mine of the sample (recorded once per dump)."""
    dumps = manifest["dumps"]
    assert isinstance(dumps, list)
    vmcore = next(d["path"] for d in dumps if d["format"] == "kdump")
    stamp = os.stat(vmcore).st_mtime_ns
    name = f"dumpminer-batches-{Path(vmcore).parent.name}-{cache}-{stamp}.pkl"
    out = Path(tempfile.gettempdir()) / name
    if not out.exists():
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(
            [sys.executable, "-c", RECORD, vmcore, str(manifest["vmlinux"]), cache, str(out)],
            env=env, check=True,
        )  # fmt: skip
    return out


def replay(tree: Path, batches: Path) -> dict[str, float | str]:
    """One round of the tally and clustering of *tree* on the recorded batches."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, "-c", REPLAY, str(batches)],
        env=env, cwd=tree, check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, float | str] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--baseline", required=True, type=Path)
    parser.add_argument("--sample", default="huge")
    parser.add_argument("--series", default="6.1")
    parser.add_argument("--cache", default="kmalloc-32")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    manifest = json.loads(Path(build_sample(args.sample, args.series)).read_text())
    batches = record(manifest, args.cache)
    with open(batches, "rb") as f:
        count = len(pickle.load(f))
    trees = {"baseline": args.baseline.resolve(), "this": ROOT}
    rounds: dict[str, list[dict[str, float | str]]] = {name: [] for name in trees}
    for round_ in range(args.runs):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for name in order:
            rounds[name].append(replay(trees[name], batches))
    print(f"{args.sample} {args.series} {args.cache}: {count} batches, {args.runs} rounds")
    totals = {}
    for name, tree in trees.items():
        runs = rounds[name]

        def median(key: str, runs: list[dict[str, float | str]] = runs) -> float:
            return statistics.median(float(r[key]) for r in runs)

        totals[name] = sum(median(p) for p in PHASES)
        cells = "  ".join(f"{p} {median(p):5.2f} (gc {median(p + '_gc'):4.2f})" for p in PHASES)
        print(
            f"  {name:8} CPU {totals[name]:5.2f} s: {cells}  "
            f"{runs[0]['clusters']} clusters, digest {runs[0]['digest']}  {tree}"
        )
    print(f"  this / baseline (CPU): {totals['this'] / totals['baseline']:.3f}")
    same = rounds["this"][0]["digest"] == rounds["baseline"][0]["digest"]
    print(f"  clusters identical: {same}")


if __name__ == "__main__":
    main()
