"""Clustering fragments into templates, on crafted fragments."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from dumpminer.cluster import cluster_fragments, skeleton
from dumpminer.fragments import Fragment


def frag(text: bytes, objects: int = 1, offset: int = 16, address: int = 0x1000) -> Fragment:
    return Fragment(text, objects, objects, 0, Counter({offset: objects}), [address])


def templates(*fragments: Fragment) -> dict[bytes, int]:
    return {c.template: c.objects for c in cluster_fragments(fragments)}


def test_numbers_generalise() -> None:
    got = templates(frag(b"t.point.00017", 3), frag(b"t.point.00018", 2), frag(b"usr", 9))
    assert got == {b"usr": 9, b"t.point.<NUM>": 5}


def test_one_format_string_is_one_template() -> None:
    # %08X printed both; the all-digit value must not split off.
    got = templates(frag(b"SESSION-0A1B2C3D"), frag(b"SESSION-00012345"), frag(b"SESSION-DEADBEEF"))
    assert got == {b"SESSION-<HEX>": 3}


def test_constant_slots_stay_literal() -> None:
    assert templates(frag(b"kmalloc-32", 4)) == {b"kmalloc-32": 4}
    assert templates(frag(b"eth0 up 1"), frag(b"eth0 up 2")) == {b"eth0 up <NUM>": 2}


def test_words_are_not_numbers() -> None:
    assert skeleton(b"sbin/*agt/") == ((b"sbin/*agt/",), ())
    assert skeleton(b"bad cafe, faded") == ((b"bad cafe, faded",), ())
    assert skeleton(b"deadbeef") == ((b"", b""), (b"deadbeef",))
    assert skeleton(b"eth0") == ((b"eth", b""), (b"0",))
    assert skeleton(b"id=0x1f,n=12") == ((b"id=", b",n=", b""), (b"0x1f", b"12"))
    assert skeleton(b"flags=0xff") == ((b"flags=", b""), (b"0xff",))
    assert templates(frag(b"mask 0xff"), frag(b"mask 0xab")) == {b"mask <HEX>": 2}


def test_cluster_fields() -> None:
    a = Fragment(b"t.point.1", 2, 3, 1, Counter({16: 3}), [0x30, 0x50])
    b = Fragment(b"t.point.2", 1, 1, 0, Counter({8: 1}), [0x10])
    [cluster] = cluster_fragments([a, b])
    assert (cluster.objects, cluster.occurrences, cluster.in_context) == (3, 4, 1)
    assert cluster.typical_offset == 16
    assert cluster.examples == [0x10, 0x30, 0x50]
    assert [m.text for m in cluster.members] == [b"t.point.1", b"t.point.2"]


texts = st.binary(min_size=1, max_size=12).map(lambda b: bytes(0x20 + (x % 95) for x in b))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(texts, st.integers(1, 50)), max_size=60, unique_by=lambda t: t[0]))
def test_every_fragment_in_one_cluster_and_totals_reconcile(items: list[tuple[bytes, int]]) -> None:
    fragments = [frag(t, n) for t, n in items]
    clusters = cluster_fragments(fragments)
    members = [m.text for c in clusters for m in c.members]
    assert sorted(members) == sorted(t for t, _ in items)
    assert sum(c.objects for c in clusters) == sum(n for _, n in items)
    assert sum(c.occurrences for c in clusters) == sum(n for _, n in items)
    again = cluster_fragments(list(reversed(fragments)))
    assert [(c.template, c.objects, [m.text for m in c.members]) for c in again] == [
        (c.template, c.objects, [m.text for m in c.members]) for c in clusters
    ]
