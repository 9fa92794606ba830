"""
Binary-looking runs (dumpminer/clustering/noise.py): short runs that are not one
word are the bytes of numbers, and their clusters are listed after every other.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import dumpminer
from dumpminer.clustering.cluster import cluster_fragments, sort_fragments
from dumpminer.clustering.noise import SHORT_RUN, all_binary_looking, binary_looking
from dumpminer.extract.fragments import Fragment


@pytest.mark.parametrize(
    "text",
    # inode_cache's time stamps (the issue), kernfs_node_cache's numbers.
    [b"kN2", b"GZ1", b"z[d", b"=:U", b"mR.", b"H8 ", b"|1%", b"Urs", b"4:1", b"a$"],
)
def test_short_mixed_runs_look_binary(text: bytes) -> None:
    assert binary_looking(text)


@pytest.mark.parametrize(
    "text",
    [b"tmp", b"usr", b"kkk", b"ZZZ", b"TCP", b"x86", b"_SB", b"123", b"lo", b"ipv"],
)
def test_short_words_are_text(text: bytes) -> None:
    assert not binary_looking(text)


@pytest.mark.parametrize("text", [b"j \\z", b"z[dR", b"@Vv*/", b"kN2!x", b"TUUU"])
def test_runs_of_four_bytes_or_more_never_look_binary(text: bytes) -> None:
    assert len(text) >= SHORT_RUN and not binary_looking(text)


def test_all_binary_looking_needs_every_text() -> None:
    assert all_binary_looking([b"kN2", b"GZ1"])
    assert not all_binary_looking([b"kN2", b"tmp"])
    assert not all_binary_looking([])


def _fragment(text: bytes, objects: int) -> Fragment:
    return Fragment(text, objects=objects, occurrences=objects, offsets={16: objects})


def test_binary_clusters_come_after_every_other() -> None:
    fragments = sort_fragments(
        [
            _fragment(b"kN2", 5000),  # a time stamp every object shares
            _fragment(b"GZ1", 4000),
            _fragment(b"dev=eth0", 10),
            _fragment(b"tmp", 3),
            _fragment(b"4:1", 2),
            _fragment(b"4:7", 2),  # with 4:1, one cluster <NUM>:<NUM>, all binary
        ]
    )
    clusters = cluster_fragments(fragments)
    order = [(c.template, c.binary) for c in clusters]
    assert order[:2] == [(b"dev=eth0", False), (b"tmp", False)]
    assert [b for _, b in order[2:]] == [True] * (len(order) - 2)
    assert [c.objects for c in clusters[2:]] == sorted(
        (c.objects for c in clusters[2:]), reverse=True
    )
    assert clusters[2].template == b"kN2"
    # Every fragment is still in one cluster.
    assert sum(c.objects for c in clusters) == sum(f.objects for f in fragments)


# --- On the seed sample ----------------------------------------------------------------------


@pytest.mark.parametrize("cache_name", ["inode_cache", "kernfs_node_cache", "kmalloc-32"])
def test_no_text_after_a_binary_cluster(sample_manifest: dict[str, Any], cache_name: str) -> None:
    entry = next(d for d in sample_manifest["dumps"] if d["format"] == "kdump")
    dump = dumpminer.open_dump(entry["path"], sample_manifest["vmlinux"])
    report = dumpminer.mine(dump.prog, cache_name, dump=dump, workers=1, attribution=False)
    flags = [c.binary for c in report.clusters]
    assert flags == sorted(flags)
    for cluster in report.clusters:
        texts = [m.text for m in cluster.members]
        assert cluster.binary == (all_binary_looking(texts) and cluster.fill is None)
    document = json.loads(dumpminer.render(report, "json"))
    assert [c["binary"] for c in document["clusters"]] == flags
