"""
Pointer attribution and string-less shape groups (issue 11, parts 2 and 3).

On the real sample dumps: the planted string-less kmalloc-96 leak (struct
link_rec) is one shape group of exactly the planted count, counted again by
the oracle with drgn's helpers, naming the module static agent_table at +16;
and every attribution agrees with drgn's identify_address/slab_object_info
on the objects it looked at. On synthetic words: the classifier's classes and
the string-less rule (printable bytes inside kernel-pointer words do not count).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from oracle import module_symbol, objects_with_word, with_module_symbols, word_identity

import dumpminer
from dumpminer.analysis.attribution import (
    Attribution,
    OffsetAttribution,
    OffsetCensus,
    attribute_clusters,
)
from dumpminer.analysis.shapes import (
    ShapeObserver,
    ShapeSummary,
    _group_keys,
    _key_classes,
    _stringless_bytes,
    group_shapes,
    stringless_rows,
    summarise_shapes,
)
from dumpminer.analysis.words import (
    KernelRanges,
    Region,
    WordNamer,
    classify_words,
    shape_key_words,
)
from dumpminer.scan.engine import PassOptions, mine_pages
from dumpminer.slub.caches import resolve_caches
from dumpminer.slub.walk import WalkStats, find_slab_pages

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------
# Synthetic words
# --------------------------------------------------------------------------

RANGES = KernelRanges(
    direct_map=(0xFFFF_8880_0000_0000, 0xFFFF_8881_0000_0000),
    vmalloc=(0xFFFF_C900_0000_0000, 0xFFFF_EA00_0000_0000),
    vmemmap=(0xFFFF_EA00_0000_0000, 0xFFFF_EA00_0400_0000),
    kernel_text=(0xFFFF_FFFF_8100_0000, 0xFFFF_FFFF_8200_0000),
    kernel_image=(0xFFFF_FFFF_8100_0000, 0xFFFF_FFFF_8300_0000),
    modules=((0xFFFF_FFFF_C000_0000, 0xFFFF_FFFF_C000_4000, "leaky_agent"),),
)


def test_classify_words_by_range() -> None:
    base = 0xFFFF_8880_0000_1000
    cases = {
        0: Region.NULL,
        7: Region.SMALL,
        0xFFFF_FFFF: Region.SMALL,
        (1 << 64) - 12: Region.SMALL,  # -ENOMEM
        base + 8: Region.SELF,
        base + 96: Region.DIRECT_MAP,  # just past the object
        0xFFFF_C900_0000_1000: Region.VMALLOC,
        0xFFFF_EA00_0000_0040: Region.VMEMMAP,
        0xFFFF_FFFF_8100_0100: Region.KERNEL_TEXT,
        0xFFFF_FFFF_8250_0000: Region.KERNEL_DATA,
        0xFFFF_FFFF_C000_0010: Region.MODULE,
        0xFFFF_FFFF_C000_4000: Region.KERNEL_OTHER,  # the module's end is exclusive
        0xFFFF_8881_0000_0000: Region.KERNEL_OTHER,  # past the direct map's end
        1 << 32: Region.OTHER,
        0x6B6B_6B6B_6B6B_6B6B: Region.OTHER,
    }
    words = np.array([list(cases)], dtype=np.uint64)
    got = classify_words(words, np.array([base], dtype=np.uint64), 96, RANGES)
    assert [Region(r) for r in got[0]] == list(cases.values())


def _pointer(low: bytes) -> bytes:
    """A direct-map pointer whose low bytes are *low*."""
    return low + bytes(8 - len(low) - 3) + b"\x88\xff\xff"


@pytest.mark.parametrize(
    ("data", "stringless"),
    [
        # Three printable low bytes of a kernel pointer are not text.
        (_pointer(b"d}@") + bytes(24), True),
        (_pointer(b"d}@l~") + _pointer(b"abc") + bytes(16), True),
        # The same bytes in a word that is not a kernel address are.
        (b"d}@" + bytes(29), False),
        # A run reaching into a pointer word is cut where the word starts.
        (bytes(6) + b"ab" + _pointer(b"c") + bytes(16), True),
        (bytes(5) + b"abc" + _pointer(b"") + bytes(16), False),
        # Runs across two data words count.
        (bytes(6) + b"ab" + b"c" + bytes(23), False),
        (bytes(32), True),
    ],
)
def test_stringless_rule(data: bytes, stringless: bool) -> None:
    rows = np.frombuffer(data, dtype=np.uint8).reshape(1, -1)
    assert bool(stringless_rows(rows, 3)[0]) is stringless
    assert bool(_stringless_bytes(rows, 3)[0]) is stringless


@pytest.mark.parametrize("size", [8, 30, 96])
@pytest.mark.parametrize("min_length", [1, 2, 3, 5, 9])
def test_stringless_compiled_matches_numpy(size: int, min_length: int) -> None:
    rng = np.random.default_rng(size * 100 + min_length)
    palette = np.array([0, 0x1F, 0x20, 0x41, 0x7E, 0x7F, 0x80, 0xFF], dtype=np.uint8)
    rows = rng.choice(palette, size=(4000, size))
    # Every third row gets kernel pointers with printable low bytes.
    for word in range(size // 8):
        rows[::3, word * 8 + 5] = 0x88
        rows[::3, word * 8 + 6 : word * 8 + 8] = 0xFF
    expected = _stringless_bytes(rows, min_length)
    assert np.array_equal(stringless_rows(rows, min_length), expected)
    assert 0 < expected.sum() < len(rows) or min_length > 8


def test_key_classes_group_equal_rows_exactly() -> None:
    rng = np.random.default_rng(7)
    keys = rng.choice(np.array([0, 1, 0xFFFF_FFFF_C000_0010], np.uint64), size=(5000, 6))
    inverse, first = _key_classes(keys)
    _, expected = np.unique(keys, axis=0, return_inverse=True)
    # The same partition: equal rows share a class, and only they do.
    assert len(first) == len(np.unique(expected))
    pairs = set(zip(inverse.tolist(), expected.reshape(-1).tolist(), strict=True))
    assert len(pairs) == len(first)
    assert np.array_equal(keys[first[inverse]], keys)


@pytest.mark.parametrize("min_length", [0, 3])
@pytest.mark.parametrize("width", [1, 3, 12, 70])
def test_compiled_grouping_matches_numpy(width: int, min_length: int) -> None:
    """
    group_shapes (C) against stringless_rows and _group_keys (numpy): the
    same string-less rows, groups, counts and samples.
    """
    rng = np.random.default_rng(width)
    values = np.array(
        [0, 5, 0xFFFF_8880_0000_1000, 0xFFFF_8880_0000_2000, 0xFFFF_FFFF_8250_0000,
         0xFFFF_FFFF_C000_0010, 0xFFFF_FFFF_C000_0020, (1 << 64) - 12, 0xFFFF_FFFF_C000_4000,
         0x0000_0000_0061_6161, 0xFFFF_8880_0061_6161, 0x6100_0000_0000_6161],
        dtype=np.uint64,
    )  # fmt: skip
    words = rng.choice(values, size=(20000, width))
    addresses = rng.permutation(np.arange(20000, dtype=np.uint64) * np.uint64(96))
    compiled = group_shapes(words, addresses, RANGES, min_length)
    which = np.arange(len(words))
    if min_length:
        which = np.flatnonzero(stringless_rows(words.view(np.uint8), min_length))
        assert 0 < len(which) < len(words)
    found = _group_keys(shape_key_words(words[which, :64], RANGES), addresses[which])
    reference = [(k, c, which[i]) for k, c, i in found]
    assert sum(count for _, count, _ in compiled) == len(which)
    assert {k: (c, tuple(i)) for k, c, i in compiled} == {k: (c, tuple(i)) for k, c, i in reference}
    # An empty batch (a cache with nothing allocated in these slabs) has no groups.
    assert group_shapes(words[:0], addresses[:0], RANGES, min_length) == []
    assert _group_keys(shape_key_words(words[:0], RANGES), addresses[:0]) == []
    # Statics stay in the key as their address, other kernel pointers are 1.
    keys = {np.frombuffer(k, dtype=np.uint64)[0] for k, _, _ in compiled}
    assert keys <= {0, 1, 0xFFFF_FFFF_8250_0000, 0xFFFF_FFFF_C000_0010, 0xFFFF_FFFF_C000_0020}
    assert len(keys) > 1


# --------------------------------------------------------------------------
# Real dumps
# --------------------------------------------------------------------------


def _dump(manifest: dict[str, Any]) -> dumpminer.Dump:
    path = next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump")
    return dumpminer.open_dump(path, manifest["vmlinux"])


def _shapes(prog: Any, cache: str) -> tuple[ShapeSummary, WordNamer]:
    caches = resolve_caches(prog, cache)
    pages = find_slab_pages(prog, {c.value_() for c in caches}, WalkStats(), False)
    factory = functools.partial(ShapeObserver, 3)
    (observer,) = mine_pages(prog, caches, pages, PassOptions(observers=(factory,))).observers
    assert isinstance(observer, ShapeObserver)
    namer = WordNamer(prog, KernelRanges.read(prog))
    return summarise_shapes(observer, namer), namer


@pytest.fixture(scope="module")
def oracle_prog(sample_manifest: dict[str, Any], open_prog: Any) -> Any:
    path = next(d["path"] for d in sample_manifest["dumps"] if d["format"] == "kdump")
    return with_module_symbols(open_prog(path, sample_manifest["vmlinux"]))


def test_string_less_leak_is_one_shape_group(
    sample_manifest: dict[str, Any], oracle_prog: Any
) -> None:
    planted = sample_manifest["string_less"]["kmalloc-96"]
    ((offset, static),) = planted["points_to"].items()
    table = module_symbol(oracle_prog, "leaky_agent", static)
    counted = objects_with_word(oracle_prog, "kmalloc-96", int(offset), table)
    assert counted == planted["objects"]
    # The list's first and last nodes point at the static head too: the
    # group holds them only because rare statics are read as plain pointers.
    head = module_symbol(oracle_prog, "leaky_agent", "link_list")
    assert objects_with_word(oracle_prog, "kmalloc-96", 0, head) == 1
    assert objects_with_word(oracle_prog, "kmalloc-96", 8, head) == 1

    summary, _ = _shapes(_dump(sample_manifest).prog, "kmalloc-96")
    assert summary.exact and summary.stringless <= summary.objects
    named = [g for g in summary.groups if f"&leaky_agent:{static}" in g.shape]
    assert len(named) == 1, [g.shape_text() for g in summary.groups]
    (group,) = named
    assert group is summary.groups[0]
    # Exactly the planted objects: the key holds the static at +16, so every
    # member points there, and there are as many as the oracle counts.
    assert group.objects == counted
    assert group.shape[int(offset) // 8] == f"&leaky_agent:{static}"
    word = group.attribution.at(int(offset))
    assert word is not None
    assert (word.kind, word.target, word.share) == ("module data", f"leaky_agent:{static}", 1.0)
    assert word.target_share == 1.0
    for address in group.examples:
        assert oracle_prog.read(address + int(offset), 8) == table.to_bytes(8, "little")
    assert group.attribution.sampled == len(group.attribution.addresses) > 0


def _oracle_attribution(
    prog: Any, attribution: Attribution, size: int
) -> list[tuple[str, float, str | None, float]]:
    """Per offset, the dominant class and target over the same objects, by drgn's helpers."""
    cache: dict[Any, Any] = {}
    words = min(size, 512) // 8
    columns: list[Counter[tuple[str, str | None]]] = [Counter() for _ in range(words)]
    for address in attribution.addresses:
        data = prog.read(address, words * 8)
        for column in range(words):
            value = int.from_bytes(data[column * 8 : column * 8 + 8], "little")
            columns[column][word_identity(prog, value, address, size, cache)] += 1
    n = len(attribution.addresses)
    out = []
    for seen in columns:
        kinds: Counter[str] = Counter()
        for (kind, _), count in seen.items():
            kinds[kind] += count
        kind, count = min(kinds.items(), key=lambda item: (-item[1], item[0]))
        targets = {t: c for (k, t), c in seen.items() if k == kind and t}
        if targets:
            target, named = min(targets.items(), key=lambda item: (-item[1], item[0]))
        else:
            target, named = None, 0
        out.append((kind, count / n, target, named / n))
    return out


def _as_tuples(attribution: Attribution) -> list[tuple[str, float, str | None, float]]:
    return [(o.kind, o.share, o.target, o.target_share) for o in attribution.offsets]


def test_attribution_agrees_with_drgn(sample_manifest: dict[str, Any], oracle_prog: Any) -> None:
    dump = _dump(sample_manifest)
    checked = 0
    for cache in sample_manifest["planted"]:
        report = dumpminer.mine(dump.prog, cache, dump=dump)
        size = report.cache.object_size
        namer = WordNamer(dump.prog, KernelRanges.read(dump.prog))
        for attribution in attribute_clusters(namer, report.clusters, size, top=6):
            assert attribution.sampled == len(attribution.addresses) > 0
            assert _as_tuples(attribution) == _oracle_attribution(oracle_prog, attribution, size)
            checked += 1
    summary, _ = _shapes(dump.prog, "kmalloc-96")
    for group in summary.groups[:3]:
        attribution = group.attribution
        assert _as_tuples(attribution) == _oracle_attribution(oracle_prog, attribution, 96)
        checked += 1
    assert checked == 21


# --------------------------------------------------------------------------
# What a user reads: the CLI's table, JSON and Markdown, and the switch
# --------------------------------------------------------------------------


def _cli(manifest: dict[str, Any], *args: str) -> Any:
    path = next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump")
    done = subprocess.run(
        [sys.executable, "-m", "dumpminer", "mine", path, "--vmlinux", manifest["vmlinux"],
         "--cache", "kmalloc-96", *args],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


def test_cli_shows_shape_groups_and_points_to(sample_manifest: dict[str, Any]) -> None:
    planted = sample_manifest["string_less"]["kmalloc-96"]
    report = json.loads(_cli(sample_manifest, "--format", "json").stdout)
    assert report["attribution"] == {"clusters": min(25, len(report["clusters"])),
                                     "sample_objects": 64}  # fmt: skip
    top = report["string_less"]["groups"][0]
    assert top["objects"] == planted["objects"]
    assert top["shape"][2] == "&leaky_agent:agent_table"
    assert top["shape_text"].startswith("pointer*2 &leaky_agent:agent_table pointer*2 ")
    word = top["attribution"]["offsets"][2]
    assert word == {"offset": 16, "class": "module data", "share": 1.0,
                    "target": "leaky_agent:agent_table", "target_share": 1.0}  # fmt: skip
    assert report["string_less"]["stringless"] <= report["string_less"]["objects_seen"]
    assert report["string_less"]["objects_seen"] == report["scan"]["objects_scanned"]
    attributed = [c["attribution"] for c in report["clusters"][:25]]
    assert all(a is not None and a["sampled"] > 0 for a in attributed if a is not None)
    assert all(c["attribution"] is None for c in report["clusters"][25:])

    table = _cli(sample_manifest, "--top", "3").stdout
    line = next(x for x in table.splitlines() if x.startswith("S1 "))
    assert f" {planted['objects']} " in line and "&leaky_agent:agent_table" in line
    after = table.splitlines()[table.splitlines().index(line) + 1]
    sampled = top["attribution"]["sampled"]
    assert "points to: " in after
    # The share is of the objects attribution read, and says so.
    assert f"+0x10 module data leaky_agent:agent_table (100% of {sampled} sampled)" in after
    assert "string-less: " in table

    markdown = _cli(sample_manifest, "--format", "markdown", "--top", "3").stdout
    assert "| points to |" in markdown
    assert f"| S1 | {planted['objects']} |" in markdown
    assert "&leaky\\_agent:agent\\_table" in markdown  # escaped for Markdown

    off = json.loads(_cli(sample_manifest, "--format", "json", "--no-attribution").stdout)
    assert off["attribution"] is None and off["string_less"] is None
    assert all(c["attribution"] is None for c in off["clusters"])
    # The clusters themselves do not change.
    assert [(c["template"], c["objects"]) for c in off["clusters"]] == [
        (c["template"], c["objects"]) for c in report["clusters"]
    ]
    plain = _cli(sample_manifest, "--no-attribution", "--top", "3").stdout
    assert "points to:" not in plain and "string-less" not in plain


def test_a_leading_string_less_group_is_named_in_the_header(
    sample_manifest: dict[str, Any],
) -> None:
    """
    In kmalloc-96 the planted link_rec leak holds no text and outnumbers every
    string cluster: the header names it before the cluster rows, the
    follow-up commands look at one of its objects, and --top 0 still shows it.
    """
    planted = sample_manifest["string_less"]["kmalloc-96"]
    report = json.loads(_cli(sample_manifest, "--format", "json").stdout)
    group = report["string_less"]["groups"][0]
    assert group["objects"] == planted["objects"]
    top = report["clusters"][0]
    if top["objects"] >= group["objects"]:
        # Where agent_table's address holds three printable bytes (6.12 here),
        # that run is in every link record: the leak is then cluster 1 itself,
        # attributed to agent_table, and no LEADING line is needed.
        assert top["objects"] == planted["objects"]
        assert "leaky_agent:agent_table" in json.dumps(top["attribution"])
        assert "LEADING:" not in _cli(sample_manifest, "--top", "3").stdout
        return

    lines = _cli(sample_manifest, "--top", "3").stdout.splitlines()
    leading = [i for i, x in enumerate(lines) if x.startswith("LEADING: string-less shape group")]
    assert leading, lines[:6]
    first_row = next(i for i, x in enumerate(lines) if x.startswith("#  objects"))
    assert leading[0] < first_row
    assert f"{planted['objects']} objects" in lines[leading[0]]
    assert "&leaky_agent:agent_table" in lines[leading[0]]
    closer = next(x for x in lines if x.startswith("look closer:"))
    assert closer == f"look closer:  crash> rd -64 {group['examples'][0]} 12"

    bare = _cli(sample_manifest, "--top", "0").stdout
    assert "LEADING: string-less shape group S1" in bare and "no clusters to show" in bare


def test_no_leading_line_when_a_string_cluster_leads(sample_manifest: dict[str, Any]) -> None:
    """kmalloc-32's planted string clusters outnumber its string-less groups: no such line."""
    path = next(d["path"] for d in sample_manifest["dumps"] if d["format"] == "kdump")
    done = subprocess.run(
        [sys.executable, "-m", "dumpminer", "mine", path, "--vmlinux", sample_manifest["vmlinux"],
         "--cache", "kmalloc-32", "--top", "3"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "LEADING:" not in done.stdout


def _inode_like(fop: str) -> Attribution:
    """A struct whose 10 pointer words are alike everywhere but +0x168."""
    words = [OffsetAttribution(8 * i, "self", 1.0) for i in range(10)]
    words.append(OffsetAttribution(0x168, "kernel data", 1.0, fop, 1.0))
    return Attribution(64, tuple(words))


def test_points_to_line_keeps_the_telling_offsets() -> None:
    groups = [_inode_like("ext4_file_operations"), _inode_like("shmem_file_operations")]
    census = OffsetCensus(groups)
    line = groups[0].points_to_line(census)
    assert line == (
        "+0x168 kernel data ext4_file_operations (100% of 64 sampled) "
        "(+10 more the same in every group)"
    )
    # One group alone: nothing to compare with, the first named offsets are shown.
    alone = groups[0].points_to_line(OffsetCensus(groups[:1]))
    assert alone.startswith("+0x0 self (100% of 64 sampled), ") and "+0x168" in alone
    assert alone.count("+0x") == 6 and alone.endswith("(+5 more)")
