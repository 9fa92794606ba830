"""Oracle tests for the real sample vmcores: what the manifest says was planted is in every dump.

Only drgn's own helpers (and, for 6.1, the crash utility) read the dumps here, so these
tests check the samples themselves, independently of dumpminer.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import drgn
import pytest
from drgn.helpers.linux.slab import find_slab_cache, slab_cache_usage
from oracle import allocated_count, count_records, planted_placement

CACHES = ("kmalloc-32", "kmalloc-64")
FORMATS = ("kdump", "flattened", "elf", "makedumpfile", "lzo", "snappy", "zstd")

OpenProg = Callable[[str, str], drgn.Program]


def dump_of(manifest: dict[str, Any], fmt: str) -> dict[str, Any]:
    matches: list[dict[str, Any]] = [d for d in manifest["dumps"] if d["format"] == fmt]
    assert len(matches) == 1, f"{len(matches)} {fmt} dumps in the manifest"
    return matches[0]


def vmcoreinfo(prog: drgn.Program) -> dict[str, str]:
    text = prog["VMCOREINFO"].string_().decode()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_manifest_contract(sample_manifest: dict[str, Any]) -> None:
    m = sample_manifest
    assert m["schema"] == "dumpminer.sample/1"
    assert m["sample"] == "seed"
    assert m["kernel_release"].startswith(m["series"] + ".")
    assert re.fullmatch(r"[0-9a-f]{40}", m["build_id"])
    assert Path(m["vmlinux"]).is_file() and Path(m["vmlinuz"]).is_file()
    assert sorted(d["format"] for d in m["dumps"]) == sorted(FORMATS)
    for dump in m["dumps"]:
        assert Path(dump["path"]).is_file(), dump
        assert dump["filtered"] == (dump["dump_level"] != 0)
    assert m["module"]["name"] == "leaky_agent"
    for cache, size in (("kmalloc-32", 32), ("kmalloc-64", 64)):
        family = m["planted"][cache]
        assert family["record_size"] == size and family["string_offset"] == 16
        assert sum(family["strings"].values()) == family["objects"]
        assert all(0 < len(s) < size - 16 for s in family["strings"])


def test_manifest_families(sample_manifest: dict[str, Any]) -> None:
    """The variable families exist, repeat, and SESSION values have both hex shapes."""
    small = sample_manifest["planted"]["kmalloc-32"]
    counters = {s: n for s, n in small["strings"].items() if re.fullmatch(r"t\.point\.\d{5}", s)}
    assert sum(counters.values()) == small["templates"]["t.point.<NUM>"]
    assert max(counters.values()) > 1
    for component in ("usr", "sbin/*agt/", "tmp", "@Vv*/", "t.point.*"):
        assert small["strings"][component] > 0
    sessions = sample_manifest["planted"]["kmalloc-64"]
    assert sum(sessions["strings"].values()) == sessions["templates"]["SESSION-<HEX>"]
    values = [s.removeprefix("SESSION-") for s in sessions["strings"]]
    assert all(re.fullmatch(r"[0-9A-F]{8}", v) for v in values)
    assert any(v.isdigit() for v in values)
    assert any(not v.isdigit() for v in values)


@pytest.mark.parametrize("fmt", FORMATS)
def test_release_matches(sample_manifest: dict[str, Any], open_prog: OpenProg, fmt: str) -> None:
    prog = open_prog(dump_of(sample_manifest, fmt)["path"], sample_manifest["vmlinux"])
    release = sample_manifest["kernel_release"]
    assert prog["UTS_RELEASE"].string_().decode() == release
    assert prog["init_uts_ns"].name.release.string_().decode() == release
    info = vmcoreinfo(prog)
    assert info["OSRELEASE"] == release
    assert info["BUILD-ID"] == sample_manifest["build_id"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_planted_counts(sample_manifest: dict[str, Any], open_prog: OpenProg, fmt: str) -> None:
    """drgn's slab walk finds exactly the planted records, string by string."""
    prog = open_prog(dump_of(sample_manifest, fmt)["path"], sample_manifest["vmlinux"])
    for cache in CACHES:
        family = sample_manifest["planted"][cache]
        counts = count_records(prog, cache, family)
        assert sum(counts.values()) == family["objects"], cache
        assert counts == Counter(family["strings"]), cache
        usage = slab_cache_usage(find_slab_cache(prog, cache))
        assert usage.num_objs - usage.free_objs >= family["objects"]


def crash_kmem(vmlinux: str, vmcore: str, cache: str) -> tuple[int, int]:
    """(allocated, total) from crash's `kmem -s CACHE` line."""
    proc = subprocess.run(
        ["crash", "-s", vmlinux, vmcore],
        input=f"kmem -s {cache}\nquit\n",
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    for line in proc.stdout.splitlines():
        fields = line.split()
        if fields and fields[-1] == cache and len(fields) >= 6:
            return int(fields[2]), int(fields[3])
    raise AssertionError(
        f"no kmem -s line for {cache} (rc {proc.returncode}):\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    )


@pytest.mark.skipif(shutil.which("crash") is None, reason="crash is not installed")
@pytest.mark.parametrize("fmt", FORMATS)
def test_crash_agrees_with_drgn(
    sample_manifest: dict[str, Any], open_prog: OpenProg, fmt: str
) -> None:
    """crash's `kmem -s kmalloc-32` allocated equals drgn's enumeration, total its counters.

    On 6.1 and 5.10: Debian 12's crash 8.0.2 predates 6.12 and exits 1 with no output on
    6.12 dumps, so there is nothing to compare there.
    """
    if sample_manifest["series"] == "6.12":
        pytest.skip("crash 8.0.2 cannot read 6.12 dumps")
    vmcore = dump_of(sample_manifest, fmt)["path"]
    prog = open_prog(vmcore, sample_manifest["vmlinux"])
    usage = slab_cache_usage(find_slab_cache(prog, "kmalloc-32"))
    allocated, total = crash_kmem(sample_manifest["vmlinux"], vmcore, "kmalloc-32")
    assert (allocated, total) == (allocated_count(prog, "kmalloc-32"), usage.num_objs)


def test_topology_recorded(sample_manifest: dict[str, Any], open_prog: OpenProg) -> None:
    """The manifest's topology is the guest's: its CPUs and NUMA nodes, as the dump shows."""
    from drgn.helpers.linux.cpumask import for_each_online_cpu
    from drgn.helpers.linux.nodemask import for_each_online_node
    from drgn.helpers.linux.percpu import per_cpu

    topology = sample_manifest["topology"]
    assert (topology["cpus"], topology["numa_nodes"]) == (4, 2)
    prog = open_prog(dump_of(sample_manifest, "kdump")["path"], sample_manifest["vmlinux"])
    assert list(for_each_online_cpu(prog)) == list(range(topology["cpus"]))
    assert list(for_each_online_node(prog)) == list(range(topology["numa_nodes"]))
    for node in topology["nodes"]:
        for cpu in node["cpus"]:
            assert per_cpu(prog["numa_node"], cpu).value_() == node["node"]


MAGICS = {"kmalloc-32": 0xA5D7, "kmalloc-64": 0xA5D8, "kmalloc-128": 0xA5D9, "kmalloc-96": None}


@pytest.mark.parametrize("fmt", FORMATS)
def test_planted_on_every_cpu_and_node(
    sample_manifest: dict[str, Any], open_prog: OpenProg, fmt: str
) -> None:
    """
    The records lie where a many-CPU walk can go wrong: in every CPU's active slab (next
    to a lockless freelist), on every CPU's partial list, and on every node's partial
    list, in one planted cache or another (the kernel decides which slab goes where).
    """
    prog = open_prog(dump_of(sample_manifest, fmt)["path"], sample_manifest["vmlinux"])
    places: dict[str, Counter[int]] = {}
    for cache, magic in MAGICS.items():
        for place, counts in planted_placement(prog, cache, magic).items():
            places.setdefault(place, Counter()).update(counts)
    cpus = range(sample_manifest["topology"]["cpus"])
    nodes = range(sample_manifest["topology"]["numa_nodes"])
    checked = [("active", cpus), ("freelist", cpus), ("cpu_partial", cpus)]
    # 5.10's SLUB keeps the slabs other CPUs free into on per-CPU partial lists
    # (the nodes' lists stayed empty of planted records in every 5.10 build here):
    # there the node lists are read by the walk but hold no planted record to find.
    if sample_manifest["series"] != "5.10":
        checked.append(("node_partial", nodes))
    for place, where in checked:
        assert all(places[place][i] > 0 for i in where), (place, dict(places[place]))
