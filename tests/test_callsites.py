"""
Allocation call sites (issue 11, part 1), on the slub-debug sample (slub_debug=FZPU:
every cache keeps alloc tracks), checked against struct track read with drgn objects
(tests/oracle.py); and the seed sample, whose caches keep none.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import selected_series
from oracle import (
    alloc_tracks,
    count_records,
    hz,
    jiffies_since_boot,
    module_function_names,
    module_section,
    open_prog,
    track_function,
    uptime_seconds,
)

import dumpminer
from dumpminer.analysis.callsites import CallSiteReport
from dumpminer.dump.open import open_dump
from dumpminer.report.model import Report
from dumpminer.slub.sampling import SampleSpec
from sample_dumps.build import build_sample

MODULE = "leaky_agent"


@pytest.fixture(scope="module", params=selected_series(), ids=lambda s: f"linux-{s}")
def slub_debug_series(request: pytest.FixtureRequest) -> dict[str, Any]:
    """
    The "slub-debug" sample on each series: 6.1 (slab flags as constants, the
    stack depot's slab index) and 6.12 (``enum _slab_flag_bits``, pool index + 1).
    """
    manifest: dict[str, Any] = json.loads(
        Path(build_sample("slub-debug", request.param)).read_text()
    )
    return manifest


def _dump(manifest: dict[str, Any]) -> str:
    return str(next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump"))


@cache
def _mine(vmcore: str, vmlinux: str | None, cache_name: str, **options: Any) -> Report:
    dump = open_dump(vmcore, vmlinux, use_vmlinux=vmlinux is not None)
    return dumpminer.mine(dump.prog, cache_name, dump=dump, **options)


def _sites(report: Report) -> CallSiteReport:
    assert report.call_sites is not None
    return report.call_sites


def _function(name: str) -> str:
    """``module:function+0xoff`` -> ``function``."""
    return name.rpartition(":")[2].partition("+")[0]


@cache
def _oracle_functions(vmcore: str, vmlinux: str, cache_name: str) -> dict[int, tuple[str, int]]:
    """Object -> (allocating function, or "<init text>"; track.addr), by drgn objects."""
    prog = open_prog(vmcore, vmlinux)
    modules = module_function_names(prog)
    init_start, init_end = module_section(prog, MODULE, ".init.text")
    out = {}
    for address, track in alloc_tracks(prog, cache_name).items():
        addr = track.addr.value_()
        if init_start <= addr < init_end:
            out[address] = ("<init text>", addr)
        else:
            out[address] = (track_function(prog, modules, addr) or hex(addr), addr)
    return out


@pytest.mark.parametrize("cache_name", ["kmalloc-32", "kmalloc-64", "kmalloc-128"])
def test_planted_clusters_top_call_site(slub_debug_series: dict[str, Any], cache_name: str) -> None:
    """Each planted cluster's top call site is its allocating function, with the exact count."""
    vmcore, vmlinux = _dump(slub_debug_series), slub_debug_series["vmlinux"]
    family = slub_debug_series["planted"][cache_name]
    expected = "<init text>" if family["alloc_in_init"] else family["alloc_function"]
    report = _mine(vmcore, vmlinux, cache_name)
    sites = _sites(report)
    records = count_records(open_prog(vmcore, vmlinux), cache_name, family)
    planted = {**family.get("templates", {}), **family["strings"]}
    checked = 0
    for cluster, where in zip(report.clusters, sites.clusters, strict=True):
        template = cluster.template.decode()
        if template not in planted or cluster.objects != planted[template]:
            continue
        top = where.sites[0]
        assert top.name.startswith(f"{MODULE}:"), top.name
        assert _function(top.name) == expected, (template, top.name)
        assert top.objects == planted[template] == cluster.objects, template
        assert where.distinct_sites == 1, (template, where.sites)
        checked += 1
    assert checked >= 1
    # The whole cache: the allocating function has exactly the family's records.
    by_function = Counter(f for f, _ in _oracle_functions(vmcore, vmlinux, cache_name).values())
    assert by_function[expected] == family["objects"] == sum(records.values())
    (cache_sites,) = sites.caches
    named = {s.name: s for s in cache_sites.sites}
    ours = [s for s in named.values() if _function(s.name) == expected]
    assert sum(s.objects for s in ours) == family["objects"]


def test_string_less_leak_call_site(slub_debug_series: dict[str, Any]) -> None:
    """The kmalloc-96 link records hold no text; the cache's call sites still name new_link."""
    vmcore, vmlinux = _dump(slub_debug_series), slub_debug_series["vmlinux"]
    family = slub_debug_series["string_less"]["kmalloc-96"]
    (cache_sites,) = _sites(_mine(vmcore, vmlinux, "kmalloc-96")).caches
    top = cache_sites.sites[0]
    assert top.name.startswith(f"{MODULE}:{family['alloc_function']}+"), top.name
    oracle = Counter(f for f, _ in _oracle_functions(vmcore, vmlinux, "kmalloc-96").values())
    assert top.objects == family["objects"] == oracle[family["alloc_function"]]


def test_shape_group_call_sites(slub_debug_series: dict[str, Any]) -> None:
    """
    The string-less link records' shape group names new_link as the call site
    of every object it sampled, as drgn reads their tracks; the JSON says how
    many were sampled.
    """
    vmcore, vmlinux = _dump(slub_debug_series), slub_debug_series["vmlinux"]
    family = slub_debug_series["string_less"]["kmalloc-96"]
    report = _mine(vmcore, vmlinux, "kmalloc-96")
    assert report.shapes is not None
    group = report.shapes.groups[0]
    assert group.objects == family["objects"]
    assert group.sampled and group.allocated_by is not None
    oracle = _oracle_functions(vmcore, vmlinux, "kmalloc-96")
    expected = Counter(oracle[a][0] for a in group.sampled)
    assert expected == {family["alloc_function"]: len(group.sampled)}
    ours = Counter({_function(name): count for name, count in group.allocated_by})
    assert ours == expected
    (site, count), *_ = group.allocated_by
    assert site.startswith(f"{MODULE}:{family['alloc_function']}+") and count == len(group.sampled)
    shown = json.loads(dumpminer.render(report, "json"))["string_less"]["groups"][0]
    assert shown["allocated_by"]["sampled"] == len(group.sampled)
    assert shown["allocated_by"]["sites"][0] == {"site": site, "objects": count}
    assert f"allocated by: {site} ({count} of {len(group.sampled)} sampled)" in dumpminer.render(
        report, "table"
    )


def test_no_tracks_no_shape_call_sites(sample_manifest: dict[str, Any]) -> None:
    """Without alloc tracks (the seed sample) shape groups claim no call site."""
    report = _mine(_dump(sample_manifest), sample_manifest["vmlinux"], "kmalloc-96")
    assert report.shapes is not None and report.shapes.groups
    assert all(g.allocated_by is None for g in report.shapes.groups)
    assert "allocated by:" not in dumpminer.render(report, "table")


@pytest.mark.parametrize("cache_name", ["kmalloc-32", "kmalloc-64", "kmalloc-96"])
def test_cache_call_sites_match_tracks(slub_debug_series: dict[str, Any], cache_name: str) -> None:
    """Every listed call site's count is the number of tracks with that address; all are seen."""
    vmcore, vmlinux = _dump(slub_debug_series), slub_debug_series["vmlinux"]
    oracle = _oracle_functions(vmcore, vmlinux, cache_name)
    per_address = Counter(addr for _, addr in oracle.values())
    report = _mine(vmcore, vmlinux, cache_name)
    (cache_sites,) = _sites(report).caches
    assert cache_sites.objects == len(oracle) == report.scan.objects_scanned
    assert cache_sites.distinct_sites == len(per_address)
    for site in cache_sites.sites:
        assert site.objects == per_address[site.address], site.name
        function = oracle_function = next(f for f, a in oracle.values() if a == site.address)
        assert _function(site.name) == oracle_function, (site.name, function)


def test_clusters_split_exactly(slub_debug_series: dict[str, Any]) -> None:
    """Every cluster's call-site counts add up to its objects (every object is tracked)."""
    vmcore, vmlinux = _dump(slub_debug_series), slub_debug_series["vmlinux"]
    report = _mine(vmcore, vmlinux, "kmalloc-32")
    sites = _sites(report)
    assert len(sites.clusters) == len(report.clusters)
    for cluster, where in zip(report.clusters, sites.clusters, strict=True):
        assert where.objects == cluster.objects, cluster.template
    # Examples: the cluster's top site is the track of its first example, by drgn.
    oracle = _oracle_functions(vmcore, vmlinux, "kmalloc-32")
    for cluster, where in list(zip(report.clusters, sites.clusters, strict=True))[:10]:
        if where.distinct_sites == 1:
            assert oracle[cluster.examples[0]][1] == where.sites[0].address


def test_bounded_tally_keeps_cluster_sites_whole(slub_debug_manifest: dict[str, Any]) -> None:
    """With a tally that folds templates, each cluster's sites still add up to its count."""
    vmcore, vmlinux = _dump(slub_debug_manifest), slub_debug_manifest["vmlinux"]
    report = _mine(vmcore, vmlinux, "kmalloc-32", max_fragments=200)
    assert report.scan.folded_templates > 0
    sites = _sites(report)
    for cluster, where in zip(report.clusters, sites.clusters, strict=True):
        assert where.objects == cluster.objects, cluster.template
    top = next(c for c in report.clusters if c.template == b"t.point.<NUM>")
    index = report.clusters.index(top)
    assert sites.clusters[index].sites[0].objects == 5000


def test_ages_and_rates(slub_debug_series: dict[str, Any]) -> None:
    """Ages come from jiffies and HZ: the planted site's span is the tracks' span, by drgn."""
    vmcore, vmlinux = _dump(slub_debug_series), slub_debug_series["vmlinux"]
    prog = open_prog(vmcore, vmlinux)
    ticks = hz(prog)
    report = _mine(vmcore, vmlinux, "kmalloc-128")
    sites = _sites(report)
    assert sites.hz == ticks
    assert sites.uptime == pytest.approx(jiffies_since_boot(prog, ticks) / ticks)
    assert sites.uptime is not None and abs(sites.uptime - uptime_seconds(prog)) < 1.0
    (cache_sites,) = sites.caches
    for site in cache_sites.sites:
        assert site.age_min is not None and site.age_max is not None
        assert 0 <= site.age_min <= site.age_max <= sites.uptime
    planted = next(s for s in cache_sites.sites if _function(s.name) == "plant_states")
    now = prog["jiffies_64"].value_()
    whens = [
        t.when.value_()
        for t in alloc_tracks(prog, "kmalloc-128").values()
        if t.addr.value_() == planted.address
    ]
    assert planted.age_min == pytest.approx((now - max(whens)) / ticks, abs=1e-3)
    assert planted.age_max == pytest.approx((now - min(whens)) / ticks, abs=1e-3)
    assert planted.age_min is not None and planted.age_max is not None
    if planted.age_max > planted.age_min:
        expected = len(whens) * 3600 / (planted.age_max - planted.age_min)
        assert planted.rate_per_hour == pytest.approx(expected, rel=1e-3)
    pids = Counter(
        t.pid.value_()
        for t in alloc_tracks(prog, "kmalloc-128").values()
        if t.addr.value_() == planted.address
    )
    assert dict(planted.pids) == dict(pids.most_common(5))
    # SLUB keeps a kmalloc's requested size after the tracks since Linux commit
    # 6edf2576a6cc ("mm/slub: enable debugging memory wasting of kmalloc") (in v6.1).
    release = tuple(int(x) for x in slub_debug_series["kernel_release"].split(".")[:2])
    assert planted.requested_sizes == (((128, 4000),) if release >= (6, 1) else ())


def test_stacks_decoded_once_per_handle(slub_debug_series: dict[str, Any]) -> None:
    """The planted site's stack is drgn's stack_depot_fetch of the handle, frame by frame."""
    from drgn.helpers.linux.stackdepot import stack_depot_fetch

    vmcore, vmlinux = _dump(slub_debug_series), slub_debug_series["vmlinux"]
    prog = open_prog(vmcore, vmlinux)
    report = _mine(vmcore, vmlinux, "kmalloc-32")
    (cache_sites,) = _sites(report).caches
    planted = cache_sites.sites[0]
    assert _function(planted.name) == "new_rule"
    assert planted.stacks and sum(s.objects for s in planted.stacks) <= planted.objects
    if not prog.type("struct track").has_member("handle"):
        _inline_stacks_match_tracks(prog, planted)
        return
    tracks = alloc_tracks(prog, "kmalloc-32")
    for stack in planted.stacks:
        track = next(t for t in tracks.values() if t.handle.value_() == stack.handle)
        trace = stack_depot_fetch(track.handle)
        assert trace is not None
        # drgn adds a frame per inlined call, at the same pc: one pc per entry.
        pcs = [frame.pc for i, frame in enumerate(trace) if i == 0 or trace[i - 1].pc != frame.pc]
        assert len(stack.frames) == len(pcs)
        assert any(frame.startswith(f"{MODULE}:new_rule+") for frame in stack.frames)
        # Frames drgn names from vmlinux carry the same function name.
        for name, pc in zip(stack.frames, pcs, strict=True):
            try:
                symbol = prog.symbol(pc)
            except LookupError:
                continue
            assert name == f"{symbol.name}+{pc - symbol.address:#x}"


def _inline_stacks_match_tracks(prog: Any, planted: Any) -> None:
    """
    Before 5.17 (no stack depot) each track keeps its stack inline, in
    ``addrs[]``: every stack shown is the pcs of as many tracks of the site as
    it claims objects, named as drgn names them.
    """
    stacks: Counter[tuple[int, ...]] = Counter()
    for track in alloc_tracks(prog, "kmalloc-32").values():
        if track.addr.value_() == planted.address:
            pcs = [pc.value_() for pc in track.addrs]
            stacks[tuple(pcs[: pcs.index(0)] if 0 in pcs else pcs)] += 1
    expected = []
    for pcs, objects in stacks.items():
        names: list[str | None] = []
        for pc in pcs:
            try:
                symbol = prog.symbol(pc)
                names.append(f"{symbol.name}+{pc - symbol.address:#x}")
            except LookupError:
                names.append(None)  # module init text: named from its sections instead
        expected.append((objects, names))

    def matches(stack: Any, objects: int, names: list[str | None]) -> bool:
        return (
            stack.objects == objects
            and len(stack.frames) == len(names)
            and all(w is None or f == w for f, w in zip(stack.frames, names, strict=True))
        )

    for stack in planted.stacks:
        assert any(frame.startswith(f"{MODULE}:new_rule+") for frame in stack.frames)
        assert any(matches(stack, objects, names) for objects, names in expected)
    heaviest = sorted(stacks.values(), reverse=True)[: len(planted.stacks)]
    assert sorted((s.objects for s in planted.stacks), reverse=True) == heaviest


def test_workers_merge_call_sites(slub_debug_manifest: dict[str, Any]) -> None:
    """Two worker processes find the same call sites and per-cluster counts as one."""
    vmcore, vmlinux = _dump(slub_debug_manifest), slub_debug_manifest["vmlinux"]
    one = _sites(_mine(vmcore, vmlinux, "kmalloc-32", workers=1))
    two = _sites(_mine(vmcore, vmlinux, "kmalloc-32", workers=2))
    assert one == two


def test_sampling_keeps_cluster_sites_whole(slub_debug_manifest: dict[str, Any]) -> None:
    """With --sample, labels share the scan with per-slab counts: both stay right."""
    vmcore, vmlinux = _dump(slub_debug_manifest), slub_debug_manifest["vmlinux"]
    sampled = _mine(vmcore, vmlinux, "kmalloc-32", sample=SampleSpec(fraction=0.5, seed=1))
    exact = _mine(vmcore, vmlinux, "kmalloc-32", sample=SampleSpec(fraction=1.0, seed=1))
    for report in (sampled, exact):
        sites = _sites(report)
        for cluster, where in zip(report.clusters, sites.clusters, strict=True):
            assert where.objects == cluster.objects, cluster.template
    # The per-slab sums (sampling intervals) are those of a run without tracks' labels.
    plain = _mine(vmcore, vmlinux, "kmalloc-32")
    by_template = {c.template: c for c in plain.clusters}
    for cluster in exact.clusters:
        assert cluster.objects == by_template[cluster.template].objects


def test_without_vmlinux_same_sites(slub_debug_manifest: dict[str, Any]) -> None:
    """BTF and kallsyms only: the same call sites, names and stacks."""
    vmcore, vmlinux = _dump(slub_debug_manifest), slub_debug_manifest["vmlinux"]
    with_vmlinux = _sites(_mine(vmcore, vmlinux, "kmalloc-64"))
    without = _sites(_mine(vmcore, None, "kmalloc-64"))
    assert with_vmlinux.hz == without.hz and with_vmlinux.jiffies == without.jiffies
    for ours, theirs in zip(with_vmlinux.caches[0].sites, without.caches[0].sites, strict=True):
        assert replace(ours, stacks=()) == replace(theirs, stacks=())
        # A label inside a function (entry_SYSCALL_64_after_hwframe) is a
        # kallsyms symbol but not an ELF function: frames may differ in name
        # there, never in number or in a module's frames.
        for one, other in zip(ours.stacks, theirs.stacks, strict=True):
            assert (one.handle, one.objects) == (other.handle, other.objects)
            assert len(one.frames) == len(other.frames)
            modules = [f for f in one.frames if f.startswith(f"{MODULE}:")]
            assert modules == [f for f in other.frames if f.startswith(f"{MODULE}:")]
    assert any(
        f.startswith(f"{MODULE}:<init text>+") for f in without.caches[0].sites[0].stacks[0].frames
    )
    for ours_c, theirs_c in zip(with_vmlinux.clusters, without.clusters, strict=True):
        assert [(s.name, s.objects) for s in ours_c.sites] == [
            (s.name, s.objects) for s in theirs_c.sites
        ]


def test_no_tracks_no_call_sites(sample_manifest: dict[str, Any]) -> None:
    """The seed sample's caches keep no tracks: no call-site section, nothing invented."""
    vmcore, vmlinux = _dump(sample_manifest), sample_manifest["vmlinux"]
    report = _mine(vmcore, vmlinux, "kmalloc-32")
    assert report.call_sites is None
    from dumpminer.report.json import to_json_dict

    document = to_json_dict(report)
    assert document["call_sites"] is None
    assert all(c["allocated_by"] is None for c in document["clusters"])
    for fmt in ("table", "markdown"):
        assert "allocated by" not in dumpminer.render(report, fmt)
    csv_rows = list(csv.DictReader(io.StringIO(dumpminer.render(report, "csv"))))
    assert all(row["allocated_by"] == "" for row in csv_rows)


def test_renderings(slub_debug_manifest: dict[str, Any]) -> None:
    """JSON, CSV, Markdown and the table carry the call sites, each escaped for where it goes."""
    from dumpminer.report.json import to_json_dict

    vmcore, vmlinux = _dump(slub_debug_manifest), slub_debug_manifest["vmlinux"]
    report = _mine(vmcore, vmlinux, "kmalloc-64")
    document = json.loads(dumpminer.render(report, "json"))
    assert document == json.loads(json.dumps(to_json_dict(report)))
    session = next(c for c in document["clusters"] if c["template"] == "SESSION-<HEX>")
    by = session["allocated_by"]
    assert by["objects"] == session["objects"] == 3000
    assert by["sites"][0]["site"].startswith(f"{MODULE}:<init text>+0x")
    assert by["sites"][0]["stack"][1] == by["sites"][0]["site"]
    sites = document["call_sites"]
    assert sites["hz"] == 250 and sites["sampled"] is False
    (entry,) = sites["caches"]
    assert entry["cache"] == "kmalloc-64" and entry["objects"] == report.scan.objects_scanned
    top = entry["sites"][0]
    assert top["objects"] == 3000 and top["requested_sizes"] == [{"size": 64, "objects": 3000}]
    assert top["age_seconds"]["min"] <= top["age_seconds"]["max"] <= sites["uptime_seconds"]
    # The module plants through work_on_cpu() on each CPU: a kworker's first work item
    # and its later ones return to different places in worker_thread, so the sessions
    # come through more than one stack, every one through the same call site.
    assert sum(stack["objects"] for stack in top["stacks"]) == 3000
    assert all(stack["frames"][1] == top["site"] for stack in top["stacks"])
    counts = [stack["objects"] for stack in top["stacks"]]
    assert counts == sorted(counts, reverse=True)
    rows = list(csv.DictReader(io.StringIO(dumpminer.render(report, "csv"))))
    row = next(r for r in rows if r["template"] == "SESSION-<HEX>")
    assert row["allocated_by"] == by["sites"][0]["site"]
    assert int(row["allocated_by_objects"]) == 3000
    table = dumpminer.render(report, "table")
    assert f"allocated by: {by['sites'][0]['site']} 3000 (100%)" in table
    assert "allocation call sites (alloc tracks; HZ 250" in table
    markdown = dumpminer.render(report, "markdown")
    assert "allocated by |" in markdown
    # Markdown would read "_" and "<" as markup: escaped.
    escaped = MODULE.replace("_", "\\_") + ":\\<init text>+0x"
    assert escaped in markdown


def test_allocated_by_line_says_what_is_untracked() -> None:
    """Shares are of the cluster's objects; objects of untracked caches are said, not hidden."""
    from dumpminer.analysis.callsites import ClusterCallSites, ClusterSite
    from dumpminer.report.callsites import allocated_by

    sites = CallSiteReport(
        250, 1000, 4.0, (), (ClusterCallSites(60, 3, (ClusterSite("a:f+0x1", 1, 40),)),)
    )
    assert allocated_by(sites, 0) == "a:f+0x1 40 (67%), 2 more"
    assert allocated_by(sites, 0, 100) == "a:f+0x1 40 (40%), 2 more; 40 untracked"
    assert allocated_by(None, 0) == "" and allocated_by(sites, 1) == ""
