"""
Templates on real dumps (issue 10): a leak whose strings differ in words is
one cluster with the planted count, slab poison is one fill cluster per byte,
and the memory bound never changes a template's count.

The oracles read the dumps with drgn's slab helpers and regular expressions
only (tests/oracle.py); nothing here asks dumpminer what to expect.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from functools import cache
from typing import Any

import pytest
from drgn.helpers.linux.slab import find_slab_cache, slab_cache_for_each_allocated_object
from oracle import count_records, open_prog, without_pointers

import dumpminer
from dumpminer.report.json import to_json_dict

STATE = re.compile(rb"/opt/agent/state/[A-Za-z]+\.json")
WORD_TEMPLATE = "/opt/agent/state/<*>.json"
RUN = re.compile(rb"[\x20-\x7e]{3,}")


@cache
def _prog(vmcore: str, vmlinux: str) -> Any:
    return open_prog(vmcore, vmlinux)


@cache
def _objects(vmcore: str, vmlinux: str, cache_name: str) -> list[bytes]:
    """
    Every allocated object's bytes, read with drgn's helpers, with the words
    holding kernel addresses blanked: runs of pointer bytes are never counted.
    """
    prog = _prog(vmcore, vmlinux)
    slab_cache = find_slab_cache(prog, cache_name)
    size = slab_cache.object_size.value_()
    return [
        without_pointers(prog.read(obj.value_(), size))
        for obj in slab_cache_for_each_allocated_object(slab_cache, "void")
    ]


@cache
def _mined(vmcore: str, vmlinux: str | None, cache_name: str, max_fragments: int | None) -> Any:
    """The report of *cache_name*; with *vmlinux* None, read on the dump's BTF and kallsyms."""
    dump = dumpminer.open_dump(vmcore, vmlinux, use_vmlinux=vmlinux is not None)
    report = dumpminer.mine(dump.prog, cache_name, max_fragments=max_fragments)
    return to_json_dict(report)


def _objects_matching(objects: list[bytes], pattern: re.Pattern[bytes]) -> int:
    """Objects times distinct whole printable runs of theirs that match *pattern*."""
    return sum(
        len({m.group() for m in RUN.finditer(data) if pattern.fullmatch(m.group())})
        for data in objects
    )


def _dump(manifest: dict[str, Any], fmt: str = "kdump") -> str:
    return str(next(d["path"] for d in manifest["dumps"] if d["format"] == fmt))


@pytest.mark.parametrize("types", ["vmlinux", "btf"])
@pytest.mark.parametrize("fmt", ["kdump", "elf", "makedumpfile"])
def test_word_leak_is_one_cluster_with_the_planted_count(
    sample_manifest: dict[str, Any], fmt: str, types: str
) -> None:
    """The same with the vmlinux and without (types from the dump's BTF)."""
    vmcore, vmlinux = _dump(sample_manifest, fmt), sample_manifest["vmlinux"]
    family = sample_manifest["planted"]["kmalloc-128"]
    planted = family["templates"][WORD_TEMPLATE]
    # The oracle: the module's records by magic, and any other object whose run fits.
    records = count_records(_prog(vmcore, vmlinux), "kmalloc-128", family)
    assert sum(records.values()) == planted == family["objects"]
    expected = _objects_matching(_objects(vmcore, vmlinux, "kmalloc-128"), STATE)
    report = _mined(vmcore, vmlinux if types == "vmlinux" else None, "kmalloc-128", None)
    state = [c for c in report["clusters"] if "/opt/agent/state/" in c["template"]]
    assert [c["template"] for c in state] == [WORD_TEMPLATE]
    [cluster] = state
    assert cluster["objects"] == expected >= planted
    assert report["clusters"][0] is cluster
    [slot] = cluster["slots"]
    assert slot["kind"] == "word"
    assert slot["distinct"] == len(family["strings"]) and slot["distinct_exact"]
    top = Counter({s.split("/")[-1][: -len(".json")]: n for s, n in family["strings"].items()})
    assert [v["objects"] for v in slot["top"]] == sorted(top.values(), reverse=True)[:5]
    assert cluster["distinct_members"] == len(family["strings"])
    assert not cluster["allocator_fill"]


@pytest.mark.parametrize("cache_name", ["kmalloc-32", "kmalloc-64"])
def test_planted_clusters_are_unchanged(sample_manifest: dict[str, Any], cache_name: str) -> None:
    """Each planted string and template is still a cluster of its own, with its count."""
    vmcore, vmlinux = _dump(sample_manifest), sample_manifest["vmlinux"]
    family = sample_manifest["planted"][cache_name]
    objects = _objects(vmcore, vmlinux, cache_name)
    report = _mined(vmcore, vmlinux, cache_name, None)
    clusters = {c["template"]: c for c in report["clusters"]}
    templated = set()
    for template, count in family["templates"].items():
        pattern = re.compile(
            re.escape(template.encode())
            .replace(rb"<NUM>", rb"[0-9]+")
            .replace(rb"<HEX>", rb"[0-9A-Fa-f]+")
        )
        members = {s for s in family["strings"] if pattern.fullmatch(s.encode())}
        templated |= members
        assert clusters[template]["objects"] == _objects_matching(objects, pattern) >= count
    for text in set(family["strings"]) - templated:
        exact = re.compile(re.escape(text.encode()))
        assert clusters[text]["objects"] == _objects_matching(objects, exact), text
        assert clusters[text]["slots"] == []


def test_poison_is_one_fill_cluster_per_byte(slub_debug_manifest: dict[str, Any]) -> None:
    vmcore, vmlinux = _dump(slub_debug_manifest), slub_debug_manifest["vmlinux"]
    for cache_name in ("kmalloc-192", "kmalloc-32", "kmalloc-128"):
        objects = _objects(vmcore, vmlinux, cache_name)
        report = _mined(vmcore, vmlinux, cache_name, None)
        fills = [c for c in report["clusters"] if c["allocator_fill"]]
        assert len({c["fill_byte"] for c in fills}) == len(fills), cache_name
        for cluster in fills:
            byte = int(cluster["fill_byte"], 16)
            pattern = re.compile(re.escape(bytes([byte])) + rb"+")
            assert cluster["template"] == f"<fill '{chr(byte)}' x N>"
            assert cluster["objects"] == _objects_matching(objects, pattern), (cache_name, byte)
            assert cluster["slots"][0]["kind"] == "length"
            for member in cluster["members"]:
                assert set(member["text"]) == {chr(byte)}
        # Poison: allocated objects hold runs of POISON_FREE ('k') in kmalloc-192.
        if cache_name == "kmalloc-192":
            assert "<fill 'k' x N>" in {c["template"] for c in fills}
        assert not any(set(c["template"]) == {"k"} for c in report["clusters"])


def test_planted_counts_hold_under_slub_debug(slub_debug_manifest: dict[str, Any]) -> None:
    vmcore, vmlinux = _dump(slub_debug_manifest), slub_debug_manifest["vmlinux"]
    for cache_name, family in slub_debug_manifest["planted"].items():
        assert (
            sum(count_records(_prog(vmcore, vmlinux), cache_name, family).values())
            == (family["objects"])
        )
        report = _mined(vmcore, vmlinux, cache_name, None)
        clusters = {c["template"]: c["objects"] for c in report["clusters"]}
        for template, count in family["templates"].items():
            assert clusters[template] >= count, template
        leaders = [c["template"] for c in report["clusters"][:8]]
        for template in family["templates"]:
            assert template in leaders


@pytest.mark.parametrize(
    ("cache_name", "template"),
    [
        ("kmalloc-32", "t.point.<NUM>"),
        ("kmalloc-128", WORD_TEMPLATE),
        ("kmalloc-64", "SESSION-<HEX>"),
    ],
)
def test_memory_bound_keeps_templates_exact(
    sample_manifest: dict[str, Any], cache_name: str, template: str
) -> None:
    """Room for 100 fragments, hundreds of distinct members: the same counts, marked folded."""
    vmcore, vmlinux = _dump(sample_manifest), sample_manifest["vmlinux"]
    exact = _mined(vmcore, vmlinux, cache_name, None)
    bounded = _mined(vmcore, vmlinux, cache_name, 100)
    assert bounded["totals"]["fragments"] <= 100
    assert not bounded["scan"]["complete"] and bounded["scan"]["folded_fragments"] > 0
    want = {c["template"]: c["objects"] for c in exact["clusters"]}
    got = {c["template"]: c["objects"] for c in bounded["clusters"]}
    assert got[template] == want[template]
    # What was planted keeps its count, on every boot. (Fragments of pointer
    # bytes, whose texts change with each boot's KASLR layout, may fold into
    # templates of their own under the bound: their clusters are not compared.)
    planted = sample_manifest["planted"][cache_name]
    for key, count in planted["templates"].items():
        assert got[key] == want[key] == count, key
    for text in planted["strings"]:
        if text in want:
            assert got.get(text) == want[text], text
    if bounded["scan"]["exact"]:
        # Nothing was dropped: the bounded clusters hold every object the exact ones do.
        assert bounded["totals"]["objects"] == exact["totals"]["objects"]
    else:
        # Only rare texts were dropped: a listed fragment never counts more than it
        # holds, and the leak's template is exact (above).
        truth = {f["text"]: f["objects"] for f in exact["fragments"]}
        assert all(f["objects"] <= truth[f["text"]] for f in bounded["fragments"])
        assert bounded["scan"]["error_bound"] > 0
    slot = next(c for c in bounded["clusters"] if c["template"] == template)["slots"][0]
    assert slot["distinct_exact"]


def test_table_says_what_the_bound_did(sample_manifest: dict[str, Any]) -> None:
    vmcore = _dump(sample_manifest)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dumpminer.cli",
            "mine",
            vmcore,
            "--vmlinux",
            sample_manifest["vmlinux"],
            "--cache",
            "kmalloc-32",
            "--max-fragments",
            "100",
            "--top",
            "8",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^folded: \d+ member fragments counted into \d+ templates", done.stdout, re.M)
    assert re.search(r"^\d+\s+5\d{3}\s", done.stdout, re.M)  # t.point.<NUM>: 5000 and more
