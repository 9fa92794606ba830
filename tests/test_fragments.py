"""Extraction and tallying of printable fragments, on crafted bytes."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dumpminer.clustering.cluster import TemplateIndex, cluster_fragments, masked
from dumpminer.clustering.tally import FragmentTally, Spread
from dumpminer.extract.fragments import count_objects, printable_runs, scan_runs


def rows_of(*objects: bytes) -> np.ndarray:
    width = max(len(o) for o in objects)
    return np.array([list(o.ljust(width, b"\0")) for o in objects], dtype=np.uint8)


def test_printable_runs_reference() -> None:
    data = b"\x03\x01\xd7\xa5\0\0\0\0" + b"\x10\x20\x30\x40\x80\x88\xff\xff" + b"tmp\0" + b"ab\0usr"
    assert list(printable_runs(data, 3)) == [(9, b" 0@"), (16, b"tmp"), (23, b"usr")]
    assert list(printable_runs(data, 2)) == [(9, b" 0@"), (16, b"tmp"), (20, b"ab"), (23, b"usr")]


def test_runs_stop_at_object_boundaries() -> None:
    # Two objects glued in memory: the text spans both but is two fragments.
    rows = rows_of(b"\0" * 29 + b"abc", b"defgh" + b"\0" * 27)
    scan = scan_runs(rows, 3)
    assert scan.row.tolist() == [0, 1]
    assert scan.offset.tolist() == [29, 0]
    assert [scan.texts[i] for i in scan.which] == [b"abc", b"defgh"]


def test_tally_counts_objects_occurrences_offsets_examples() -> None:
    rows = rows_of(b"usr\0usr\0", b"\0tmp\0\0\0\0", b"usr\0\0\0\0\0", b"\0\0\0\0\0\0\0\0")
    addresses = np.array([0x1000, 0x1020, 0x1040, 0x1060], dtype=np.uint64)
    tally = FragmentTally()
    tally.add_objects(rows, addresses, 3)
    usr = tally.fragments[b"usr"]
    assert (usr.objects, usr.occurrences) == (2, 3)
    assert usr.offsets == Counter({0: 2, 4: 1})
    assert usr.examples == [0x1000, 0x1040]
    tmp = tally.fragments[b"tmp"]
    assert (tmp.objects, tmp.occurrences, dict(tmp.offsets)) == (1, 1, {1: 1})
    tally.add_context(rows_of(b"usr\0", b"abcd"), 3)
    assert tally.fragments[b"usr"].in_context == 1
    assert tally.fragments[b"abcd"].objects == 0
    assert tally.fragments[b"abcd"].in_context == 1


def test_examples_are_the_lowest_addresses() -> None:
    rows = rows_of(*[b"leak"] * 8)
    addresses = np.array([80, 10, 70, 20, 60, 30, 50, 40], dtype=np.uint64)
    tally = FragmentTally()
    tally.add_objects(rows, addresses, 3)
    assert tally.fragments[b"leak"].examples == [10, 20, 30, 40, 50]


objects_strategy = st.lists(st.binary(min_size=16, max_size=16), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(objects_strategy, st.integers(min_value=1, max_value=6))
def test_vector_extraction_matches_reference(objects: list[bytes], min_length: int) -> None:
    rows = rows_of(*objects)
    scan = scan_runs(rows, min_length)
    texts = [scan.texts[i] for i in scan.which]
    got = list(zip(scan.row.tolist(), scan.offset.tolist(), texts, strict=True))
    want = [
        (i, off, text) for i, o in enumerate(objects) for off, text in printable_runs(o, min_length)
    ]
    assert got == want


@settings(max_examples=100, deadline=None)
@given(objects_strategy, st.integers(min_value=1, max_value=4), st.randoms(use_true_random=False))
def test_tally_is_exact_and_order_independent(objects: list[bytes], min_length: int, rnd) -> None:
    addresses = np.arange(len(objects), dtype=np.uint64) * 16
    whole = FragmentTally()
    whole.add_objects(rows_of(*objects), addresses, min_length)
    # Same objects, split into shuffled batches and merged.
    order = list(range(len(objects)))
    rnd.shuffle(order)
    cut = len(order) // 2
    merged = FragmentTally()
    for part in (order[:cut], order[cut:]):
        if part:
            t = FragmentTally()
            t.add_objects(rows_of(*[objects[i] for i in part]), addresses[part], min_length)
            merged.merge(t)
    expected_occ: Counter[bytes] = Counter()
    expected_obj: Counter[bytes] = Counter()
    for o in objects:
        texts = [t for _, t in printable_runs(o, min_length)]
        expected_occ.update(texts)
        expected_obj.update(set(texts))
    for tally in (whole, merged):
        assert {t: f.occurrences for t, f in tally.fragments.items()} == dict(expected_occ)
        assert {t: f.objects for t, f in tally.fragments.items()} == dict(expected_obj)
    assert {t: (f.offsets, f.examples) for t, f in whole.fragments.items()} == {
        t: (f.offsets, f.examples) for t, f in merged.fragments.items()
    }


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([b"hot1", b"hot2"]) | st.binary(min_size=4, max_size=4), max_size=300),
    st.integers(min_value=2, max_value=20),
)
def test_bounded_tally_keeps_heavy_hitters_within_error_bound(
    texts: list[bytes], max_fragments: int
) -> None:
    objects = [b"\0" + t + b"\0" * 3 for t in texts] or [b"\0" * 8]
    exact, bounded = FragmentTally(None), FragmentTally(max_fragments)
    for i in range(0, len(objects), 7):  # several batches, so pruning happens between them
        rows = rows_of(*objects[i : i + 7])
        addresses = np.arange(i, i + len(rows), dtype=np.uint64) * 8
        exact.add_objects(rows, addresses, 3)
        bounded.add_objects(rows, addresses, 3)
    assert len(bounded.fragments) <= max_fragments
    assert bounded.exact == (bounded.error_bound == 0)
    folded = TemplateIndex(t.key for t in bounded.templates)
    for text, truth in exact.fragments.items():
        kept = bounded.fragments.get(text)
        if kept is None:
            # Counted into a folded template, or dropped as rare.
            assert folded.find(masked(text)) is not None or truth.occurrences <= bounded.error_bound
        else:
            assert truth.objects - bounded.error_bound <= kept.objects <= truth.objects
            assert truth.occurrences - bounded.error_bound <= kept.occurrences <= truth.occurrences
    # Nothing is lost between fragments, folded templates and dropped texts.
    total = sum(f.objects for f in exact.fragments.values())
    held = sum(f.objects for f in bounded.fragments.values())
    held += sum(t.objects for t in bounded.templates)
    assert total - bounded.dropped_fragments * bounded.error_bound <= held <= total
    if bounded.exact:
        assert held == total


def test_bounded_tally_drops_noise_and_says_so() -> None:
    # Distinct words with nothing in common: no template can fold them.
    noise = [b"\0" + bytes([97 + i % 26, 97 + i // 26 % 26, 113]) + b"\0\0" for i in range(100)]
    rows = rows_of(*([b"\0leak\0\0\0"] * 50 + noise))
    tally = FragmentTally(10)
    tally.add_objects(rows, np.arange(len(rows), dtype=np.uint64), 3)
    assert not tally.exact and tally.dropped_fragments >= 90 and tally.error_bound == 1
    assert tally.fragments[b"leak"].objects == 50


def test_long_and_short_runs_group_apart_and_exactly() -> None:
    """One long printable object among short runs: counts exact, texts by class."""
    long_text = bytes(0x41 + i % 26 for i in range(1000))
    objects = [long_text, long_text] + [b"\0abc\0" + b"\0" * 995] * 50 + [b"x" * 9 + b"\0" * 991]
    tally = FragmentTally()
    tally.add_objects(rows_of(*objects), np.arange(len(objects), dtype=np.uint64) * 1024, 3)
    got = {t: f.objects for t, f in tally.fragments.items()}
    assert got == {long_text: 2, b"abc": 50, b"x" * 9: 1}


# Mostly printable bytes, so that runs of every width class come up: short
# ones (copied word by word) and ones past 64 bytes (copied as windows).
printable_heavy = st.binary(min_size=1, max_size=1).map(lambda b: b if b[0] % 4 else b"\0") | (
    st.sampled_from(list(b"ab.-0123456789 "))
).map(lambda c: bytes([c]))


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=150).flatmap(
        lambda width: st.lists(
            st.lists(printable_heavy, min_size=width, max_size=width).map(b"".join),
            min_size=1,
            max_size=30,
        )
    ),
    st.integers(min_value=1, max_value=5),
    st.booleans(),
)
def test_grouping_matches_reference(objects: list[bytes], min_length: int, collide: bool) -> None:
    """
    scan_runs gives each run its own text and counts exactly (runs, objects,
    offsets, objects per slab, lowest addresses), on rows of any width and
    runs of any length; with a one-bit hash (collide), texts that differ
    share hash values and must still be told apart byte by byte.
    """
    rows = rows_of(*objects)
    addresses = np.arange(len(objects), dtype=np.uint64)[::-1] * 64
    slab_of_row = np.arange(len(objects), dtype=np.int64) // 3
    scan = scan_runs(rows, min_length, addresses, 1 if collide else 64, slab_of_row)
    per_object = [[text for _, text in printable_runs(o, min_length)] for o in objects]
    want = [text for texts in per_object for text in texts]
    assert [scan.texts[i] for i in scan.which.tolist()] == want
    assert len(set(scan.texts)) == len(scan.texts)
    assert dict(zip(scan.texts, scan.occurrences.tolist(), strict=True)) == dict(Counter(want))
    at = Counter((text, off) for o in objects for off, text in printable_runs(o, min_length))
    pairs = zip(
        scan.offset_text.tolist(), scan.offset_at.tolist(), scan.offset_runs.tolist(), strict=True
    )
    assert {(scan.texts[t], off): runs for t, off, runs in pairs} == dict(at)
    holders = Counter(text for texts in per_object for text in set(texts))
    per_slab = Counter((text, k // 3) for k, texts in enumerate(per_object) for text in set(texts))
    slabs = zip(
        scan.slab_text.tolist(), scan.slab_index.tolist(), scan.slab_objects.tolist(), strict=True
    )
    assert {(scan.texts[t], slab): n for t, slab, n in slabs} == dict(per_slab)
    assert dict(zip(scan.texts, scan.objects.tolist(), strict=True)) == dict(holders)
    for i, text in enumerate(scan.texts):
        lowest = sorted(int(addresses[k]) for k, texts in enumerate(per_object) if text in texts)
        assert [a for a in scan.examples[i].tolist() if a != 2**64 - 1] == lowest[:5]


def test_counts_without_the_runs_are_the_same() -> None:
    """keep_runs=False (what mining uses) drops the per-run columns and nothing else."""
    rng = np.random.default_rng(15)
    rows = rng.choice(np.frombuffer(b"ab\0\x7fc", dtype=np.uint8), size=(5000, 32))
    addresses = np.arange(5000, dtype=np.uint64) * 32
    slab_of_row = np.arange(5000, dtype=np.int64) // 128
    full = scan_runs(rows, 3, addresses, slab_of_row=slab_of_row)
    lean = scan_runs(rows, 3, addresses, slab_of_row=slab_of_row, keep_runs=False)
    assert len(full.row) > 5000
    assert len(lean.row) == len(lean.offset) == len(lean.which) == 0
    assert lean.texts == full.texts
    for column in ("occurrences", "objects", "examples", "offset_text", "offset_at",
                   "offset_runs", "slab_text", "slab_index", "slab_objects"):  # fmt: skip
        assert np.array_equal(getattr(lean, column), getattr(full, column)), column


def test_an_address_seen_twice_is_one_example() -> None:
    """Rows at one address (a hostile or merged input) give one example, losing none."""
    rows = rows_of(*[b"leak"] * 6)
    addresses = np.array([50, 10, 20, 30, 40, 20], dtype=np.uint64)
    scan = scan_runs(rows, 3, addresses)
    assert scan.examples[0].tolist() == [10, 20, 30, 40, 50]


def test_a_template_stays_exact_far_below_the_bound() -> None:
    """An id per record: 997 distinct members, room for 20 fragments, exact count."""
    leak = [b"\0t.point.%05d\0" % (i % 997) for i in range(5000)]
    names = [b"\0/opt/s/%s.json\0" % bytes([97 + i % 26, 97 + i // 26 % 26]) for i in range(600)]
    noise = [b"\0usr\0", b"\0tmp\0"] * 300
    objects = leak + names + noise
    tally = FragmentTally(20)
    for i in range(0, len(objects), 64):
        rows = rows_of(*objects[i : i + 64])
        tally.add_objects(rows, np.arange(i, i + len(rows), dtype=np.uint64) * 32, 3)
    assert tally.exact and not tally.complete and len(tally) <= 20
    clusters = {
        c.template: c for c in cluster_fragments(list(tally.fragments.values()), tally.templates)
    }
    assert clusters[b"t.point.<NUM>"].objects == 5000
    assert clusters[b"/opt/s/<*>.json"].objects == 600
    assert clusters[b"usr"].objects == clusters[b"tmp"].objects == 300
    [slot] = clusters[b"t.point.<NUM>"].slots
    assert (slot.kind, slot.distinct, slot.distinct_exact) == ("num", 997, True)
    assert clusters[b"t.point.<NUM>"].examples == [i * 32 for i in range(5)]


_members = st.sampled_from(
    [b"t.point.%05d" % i for i in range(40)]
    + [b"/opt/s/%s.json" % bytes([97 + i, 98 + i]) for i in range(20)]
    + [b"kkkk", b"kkkkkkkkk", b"usr", b"tmp", b"@Vv*/"]
)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(_members, min_size=1, max_size=400),
    st.integers(min_value=4, max_value=40),
    st.integers(min_value=1, max_value=50),
)
def test_folding_keeps_every_cluster_count(
    texts: list[bytes], max_fragments: int, batch: int
) -> None:
    """Bounded or not, in any batching: the same clusters with the same counts."""
    objects = [b"\0" + t + b"\0" for t in texts]
    exact, bounded = FragmentTally(None), FragmentTally(max_fragments)
    for i in range(0, len(objects), batch):
        rows = rows_of(*objects[i : i + batch])
        addresses = np.arange(i, i + len(rows), dtype=np.uint64) * 64
        exact.add_objects(rows, addresses, 3)
        bounded.add_objects(rows, addresses, 3)
    want = cluster_fragments(list(exact.fragments.values()))
    got = cluster_fragments(list(bounded.fragments.values()), bounded.templates)
    assert len(bounded.fragments) <= max_fragments
    if bounded.exact:
        assert {(c.template, c.objects, c.occurrences) for c in got} == {
            (c.template, c.objects, c.occurrences) for c in want
        }
        assert {c.template: c.examples for c in got} == {c.template: c.examples for c in want}
        assert {c.template: c.offsets for c in got} == {c.template: c.offsets for c in want}


def test_cluster_spreads_are_per_cluster_sums_over_slabs() -> None:
    """Per-slab sums of a cluster include the cross terms of its members."""
    rows = rows_of(b"\0t.point.1\0", b"\0t.point.2\0", b"\0usr\0", b"\0t.point.3\0")
    counts = count_objects(rows, np.arange(4, dtype=np.uint64) * 16, 3,
                           np.array([0, 0, 0, 1], np.int64), 2)  # fmt: skip
    tally = FragmentTally(per_slab=True)
    tally.absorb(counts)
    clusters = cluster_fragments(list(tally.fragments.values()), tally.templates)
    spreads = dict(zip([c.template for c in clusters], tally.cluster_spreads(clusters),
                       strict=True))  # fmt: skip
    # t.point.<NUM>: 2 objects in slab 0 (of 3), 1 in slab 1 (of 1).
    assert spreads[b"t.point.<NUM>"] == Spread(2 * 2 + 1 * 1, 2 * 3 + 1 * 1)
    assert spreads[b"usr"] == Spread(1, 3)
