"""The report's sections (dumpminer/report/model.py): each field reaches its JSON, once."""

from __future__ import annotations

from dataclasses import fields

from dumpminer.report.model import (
    CacheFacts,
    DumpFacts,
    DumpTime,
    IncompleteDump,
    Interruption,
    ListReach,
    Progress,
    SampleFacts,
    ScanFacts,
)

LISTED = ListReach(7, 1, 2, 1, False, ("a list loops",))
INCOMPLETE = IncompleteDump("the dump lacks ...", 5, 9, 0.5556, 60, 100, True, 64, 8, LISTED)


def names(cls: type) -> list[str]:
    return [f.name for f in fields(cls)]


def test_every_field_is_written_under_its_own_name() -> None:
    """A field added to a section and forgotten in its to_json fails here."""
    scan = ScanFacts(objects_scanned=1, slabs=1, seconds=0.5, fault_addresses=(0xFFFF8880,))
    assert list(scan.to_json()) == names(ScanFacts)
    assert scan.to_json()["fault_addresses"] == ["0xffff8880"]
    cache = CacheFacts("kmalloc-*", ("kmalloc-32",), 32, 10, 12, 1)
    assert list(cache.to_json()) == names(CacheFacts)
    assert cache.to_json()["caches"] == ["kmalloc-32"]
    sample = SampleFacts(0.5, None, 1, 2, 4, 100, 2, 5000, 200)
    assert list(sample.to_json()) == names(SampleFacts)
    dump = DumpFacts("/d", "6.1", "kdump", "ab", None, "btf+kallsyms")
    assert list(dump.to_json()) == names(DumpFacts)[:-1]  # no time when none was read
    timed = DumpFacts("/d", "6.1", "kdump", "ab", None, "vmlinux", DumpTime(1700000000, "header"))
    assert list(timed.to_json()) == [*names(DumpFacts)[:-1], "time", "time_source", "time_utc"]
    assert timed.to_json()["time_utc"] == "2023-11-14T22:13:20Z"
    listed = [n for n in names(IncompleteDump) if n not in ("why", "listed")]
    assert list(INCOMPLETE.to_json()) == ["incomplete_dump", *listed, *names(ListReach)]


def test_progress_says_what_cut_the_report_short() -> None:
    assert Progress().to_json() == {} and not Progress().partial
    walk = Progress(interrupted=Interruption(3, 10))
    assert walk.partial and walk.to_json() == {"slabs_walked": 3, "slabs_found": 10}
    dump = Progress(incomplete=INCOMPLETE)
    assert dump.partial and dump.to_json() == {**INCOMPLETE.to_json(), "interrupted": False}
    # Both: the walk's counts lead, as when the walk's progress was merged with the dump's.
    both = Progress(interrupted=Interruption(5, 10), incomplete=INCOMPLETE).to_json()
    assert list(both)[:3] == ["slabs_walked", "slabs_found", "incomplete_dump"]
    assert both["interrupted"] is True and both["slabs_walked"] == 5
