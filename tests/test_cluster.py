"""Clustering fragments into templates, on crafted fragments."""

from __future__ import annotations

import re
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from dumpminer.clustering.cluster import (
    FILL,
    SEPARATORS,
    WILD,
    Cluster,
    cluster_fragments,
    masked,
    masked_all,
    skeleton,
)
from dumpminer.extract import _runs
from dumpminer.extract.fragments import Fragment


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


# --- Word slots, fills, and a brute-force reference ---------------------------------------


def test_words_generalise_and_keep_their_values() -> None:
    names = [b"kelo", b"marisu", b"vizu", b"bada"]
    clusters = cluster_fragments(
        [frag(b"/opt/agent/state/%s.json" % n, 2 + i) for i, n in enumerate(names)]
    )
    [cluster] = clusters
    assert cluster.template == b"/opt/agent/state/<*>.json" and cluster.objects == 14
    [slot] = cluster.slots
    assert (slot.kind, slot.distinct, slot.distinct_exact) == ("word", 4, True)
    assert slot.top[0] == (b"bada", 5)


def test_no_over_merging() -> None:
    # Nothing would stay fixed; punctuation and numbers are not words; two members are too few.
    assert templates(frag(b"tmp", 5), frag(b"usr", 4), frag(b"var", 3)) == {
        b"tmp": 5,
        b"usr": 4,
        b"var": 3,
    }
    got = templates(frag(b"t.point.*", 6), frag(b"t.point.00017"), frag(b"t.point.00018"))
    assert got == {b"t.point.*": 6, b"t.point.<NUM>": 2}
    assert len(templates(frag(b"/opt/x/kelo.json"), frag(b"/opt/x/vizu.json"))) == 2
    # Too little fixed text: "ab" is not enough to name a leak.
    assert len(templates(frag(b"ab.cd"), frag(b"ab.ef"), frag(b"ab.gh"))) == 3


def test_fill_is_one_cluster_per_byte() -> None:
    got = cluster_fragments([frag(b"k" * n, n) for n in (3, 15, 47)] + [frag(b"ZZZZ", 2)])
    fills = {c.template: (c.objects, c.fill) for c in got}
    assert fills == {b"<fill 'k' x N>": (65, 0x6B), b"<fill 'Z' x N>": (2, 0x5A)}


FIXED_CHARS = re.compile(rb"[A-Za-z0-9]")


def _pattern(template: bytes) -> re.Pattern[bytes]:
    """A template as a regular expression over its members (the reference's view)."""
    fill = re.fullmatch(rb"<fill (?:'(.)'|\"(')\") x N>", template)
    if fill:
        return re.compile(re.escape(fill.group(1) or fill.group(2)) + b"{3,}")
    out = re.escape(template)
    for slot, rx in (
        (b"<\\*>", rb"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*"),
        (b"<NUM>", rb"[0-9]+"),
        (b"<HEX>", rb"(?:0[xX])?[0-9A-Fa-f]+"),
    ):
        out = out.replace(re.escape(slot), rx)
    return re.compile(out)


words = st.sampled_from([b"usr", b"tmp", b"kelo", b"vizu", b"ab", b"x", b"sbin", b"*agt", b"42"])
structured = st.lists(words, min_size=1, max_size=4).flatmap(
    lambda parts: st.lists(
        st.sampled_from(list(b"/._- ")), min_size=len(parts) - 1, max_size=len(parts) - 1
    ).map(
        lambda seps: (
            parts[0] + b"".join(bytes([s]) + p for s, p in zip(seps, parts[1:], strict=True))
        )
    )
)
any_text = texts | structured | st.sampled_from([b"kkk", b"kkkkkkk", b"ZZZZ", b"   "])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(any_text, st.integers(1, 50)), max_size=80, unique_by=lambda t: t[0]))
def test_clusters_against_a_brute_force_reference(items: list[tuple[bytes, int]]) -> None:
    fragments = [frag(t, n) for t, n in items]
    clusters = cluster_fragments(fragments)
    # Every fragment in exactly one cluster; sums preserved.
    members = [m.text for c in clusters for m in c.members]
    assert sorted(members) == sorted(t for t, _ in items)
    assert sum(c.objects for c in clusters) == sum(n for _, n in items)
    for c in clusters:
        # Brute force: the template, read as a pattern, matches each member whole.
        for m in c.members:
            assert _pattern(c.template).fullmatch(m.text), (c.template, m.text)
        assert c.objects == sum(m.objects for m in c.members)
        if any(s.kind == "word" for s in c.slots):
            fixed = c.template.replace(b"<*>", b"").replace(b"<NUM>", b"").replace(b"<HEX>", b"")
            assert len(FIXED_CHARS.findall(fixed)) >= 4, c.template
            assert len(c.members) >= 3
        # A word slot never stands alone: "<*>" and "<*>.<*>" are never made. (A number
        # slot may: "<NUM>" says "decimal ids", the clue to a leak of ids; see the docs.)
        if b"<*>" in c.template:
            assert c.template.replace(b"<*>", b"").strip(b"/._-:=@,; ") != b"", c.template
        for slot in c.slots:
            assert slot.distinct >= 2 or slot.kind == "length"
            assert sum(n for _, n in slot.top) <= c.objects
    again = cluster_fragments(list(reversed(fragments)))
    assert [(c.template, c.objects, [m.text for m in c.members]) for c in again] == [
        (c.template, c.objects, [m.text for m in c.members]) for c in clusters
    ]


# --- The compiled masks (dumpminer/extract/_runs.c) against the regex ---

# Bytes where the number rules have edges: digits, hex letters, "x", other letters,
# separators, fill bytes, and the placeholders themselves.
edgy = st.lists(
    st.sampled_from(list(b"0123456789aAfFgGxXzkZ /._-:\x00\x01\x02\x7f\xff")), max_size=16
)
raw_texts = edgy.map(bytes) | st.binary(max_size=16) | texts | structured


@settings(max_examples=500, deadline=None)
@given(st.lists(raw_texts, max_size=30))
def test_compiled_masks_match_the_regex(items: list[bytes]) -> None:
    got = masked_all(items)
    assert got == [masked(t) for t in items]
    # A text without a number comes back as itself, not a copy.
    assert all(g is t for g, t in zip(got, items, strict=True) if masked(t) == t and len(t) > 0)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(raw_texts.map(masked) | st.sampled_from([WILD + b"/usr", b"a." + WILD]), max_size=30)
)
def test_key_flags_match_their_definition(keys: list[bytes]) -> None:
    flags = _runs.key_flags(keys, SEPARATORS, 5)
    for key, flag in zip(keys, flags, strict=True):
        alnum = sum(chr(b).isascii() and chr(b).isalnum() for b in key)
        expected = (
            (1 if key.startswith(FILL) else 0)
            | (2 if any(b in SEPARATORS for b in key) else 0)
            | (4 if WILD in key else 0)
            | (8 if alnum >= 5 else 0)
        )
        assert flag == expected, key


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(any_text, st.integers(1, 50)), max_size=80, unique_by=lambda t: t[0]))
def test_known_masks_change_nothing(items: list[tuple[bytes, int]]) -> None:
    fragments = [frag(t, n) for t, n in items]
    some = {t: masked(t) for t, _ in items[::2]}

    def shape(clusters: list[Cluster]) -> list[tuple[bytes, bytes, int, list[bytes]]]:
        return [(c.template, c.key, c.objects, [m.text for m in c.members]) for c in clusters]

    assert shape(cluster_fragments(fragments, (), some)) == shape(cluster_fragments(fragments))
