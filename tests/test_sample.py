"""--sample: seeded slab sampling, scaled counts and their intervals."""

from __future__ import annotations

from typing import Any

import pytest

import dumpminer
from dumpminer.errors import UsageError
from dumpminer.report import to_json_dict
from dumpminer.sample import SampleSpec, parse_sample, sample_pages, wilson_interval
from dumpminer.walk import SlabPage


def pages(n: int, objects: int = 128) -> list[SlabPage]:
    return [SlabPage(0x1000 * i, i, 0xC0FFEE, 0, objects) for i in range(n)]


def test_parse_sample() -> None:
    assert parse_sample("0.1") == SampleSpec(fraction=0.1)
    assert parse_sample("1.0", seed=3) == SampleSpec(fraction=1.0, seed=3)
    assert parse_sample("500000") == SampleSpec(objects=500000)
    for bad in ("0", "-1", "1.5", "nan", "many"):
        with pytest.raises(UsageError):
            parse_sample(bad)


def test_sample_pages_is_seeded_uniform_and_sorted() -> None:
    all_pages = pages(1000)
    first = sample_pages(all_pages, SampleSpec(fraction=0.1, seed=5))
    assert len(first) == 100
    assert first == sorted(first, key=lambda p: p.pfn)
    assert first == sample_pages(all_pages, SampleSpec(fraction=0.1, seed=5))
    assert first != sample_pages(all_pages, SampleSpec(fraction=0.1, seed=6))
    assert len(sample_pages(all_pages, SampleSpec(objects=1280))) == 10
    assert len(sample_pages(all_pages, SampleSpec(objects=10**9))) == 1000


def test_wilson_interval() -> None:
    low, high = wilson_interval(50, 100)
    assert low < 0.5 < high and round(low, 3) == 0.404 and round(high, 3) == 0.596
    assert wilson_interval(0, 100)[0] == 0.0


def test_sampled_report_scales_to_the_cache(sample_manifest: dict[str, Any]) -> None:
    entry = next(d for d in sample_manifest["dumps"] if d["format"] == "kdump")
    dump = dumpminer.open_dump(entry["path"], sample_manifest["vmlinux"])
    spec = SampleSpec(fraction=0.5, seed=1)
    report = to_json_dict(dumpminer.mine(dump.prog, "kmalloc-32", dump=dump, sample=spec))
    again = to_json_dict(dumpminer.mine(dump.prog, "kmalloc-32", dump=dump, sample=spec))
    for r in (report, again):
        r["scan"].pop("seconds")
    assert report == again
    sample = report["sample"]
    assert sample["slabs_sampled"] == -(-sample["slabs_total"] // 2)
    assert 0 < sample["objects_sampled"] < report["cache"]["allocated"] == sample["population"]
    planted = sample_manifest["planted"]["kmalloc-32"]["strings"]
    found = {f["text"]: f for f in report["fragments"]}
    for text in ("sbin/*agt/", "@Vv*/", "usr"):
        low, high = found[text]["objects_ci95"]
        assert found[text]["sampled_objects"] < planted[text]
        assert low <= planted[text] <= high, text
