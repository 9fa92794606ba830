"""
The fleet's rows from per-dump summaries (dumpminer/fleet/aggregate.py): pure
functions, on hand-made dumps whose answer is known.
"""

from __future__ import annotations

from dumpminer.fleet.aggregate import aggregate, find_rows, template_pattern
from dumpminer.fleet.model import FAILED, MINED, CacheSummary, DumpEntry

HOUR = 3600


def _dump(
    name: str,
    clusters: list[tuple[str, int]],
    host: str | None = "web-1",
    time: int | None = 0,
    allocated: int = 1000,
    status: str = MINED,
) -> DumpEntry:
    cache = CacheSummary("kmalloc-32", ("kmalloc-32",), allocated, False, tuple(clusters))
    return DumpEntry(
        path=f"/crash/{name}", digest=name, status=status, report=None, exit_code=0, error=None,
        host=host, time=time, time_source="header", osrelease="6.1", build_id="ab",
        format="kdump", size=1, caches=(cache,),
    )  # fmt: skip


def test_template_pattern() -> None:
    assert template_pattern("t.point.<NUM>").fullmatch("t.point.00017")
    assert template_pattern("SESSION-<HEX>").fullmatch("SESSION-0A1B2C3D")
    assert template_pattern("/opt/<*>.json").fullmatch("/opt/db2.json")
    assert not template_pattern("/opt/<*>.json").fullmatch("/opt/a/b.json")
    assert not template_pattern("a.b").fullmatch("aXb")  # fixed text is literal


def test_literal_joins_the_slotted_template_of_another_dump() -> None:
    rows = aggregate([
        _dump("a", [("t.point.00017", 6), ("tmp", 10)]),
        _dump("b", [("t.point.<NUM>", 500), ("tmp", 30)]),
        _dump("c", [("t.point.<HEX>", 4)]),
    ])  # fmt: skip
    by = {r.template: r for r in rows}
    assert set(by) == {"t.point.<NUM>", "tmp"}
    point = by["t.point.<NUM>"]
    assert point.sources == ("t.point.00017", "t.point.<HEX>", "t.point.<NUM>")
    assert point.objects == 510 and point.dumps == 3
    assert (point.share_min, point.share_median, point.share_max) == (0.004, 0.006, 0.5)
    assert [r.template for r in rows] == ["t.point.<NUM>", "tmp"]  # most objects first


def test_growth_per_host_first_to_last_dump() -> None:
    rows = aggregate([
        _dump("a", [("leak", 100)], time=0),
        _dump("b", [("leak", 300)], time=2 * HOUR),
        _dump("c", [("other", 5)], time=4 * HOUR),   # mined the cache, lacks the template: 0
        _dump("d", [("leak", 7)], host="db-1", time=HOUR),  # one dump: no growth
        _dump("e", [("leak", 9)], status=FAILED),    # not counted
    ])  # fmt: skip
    leak = next(r for r in rows if r.template == "leak")
    assert leak.objects == 407 and leak.hosts == ("db-1", "web-1")
    assert (leak.first_seen, leak.last_seen) == (0, 2 * HOUR)
    [growth] = leak.growth
    assert growth.host == "web-1" and growth.dumps == 3
    assert growth.per_hour == (0 - 100) / 4
    assert [c.digest for c in leak.per_dump] == ["a", "d", "b"]  # by time


def test_find_by_template_or_text() -> None:
    rows = aggregate([_dump("a", [("t.point.<NUM>", 6), ("tmp", 3)])])
    assert [r.template for r in find_rows(rows, "t.point.<NUM>")] == ["t.point.<NUM>"]
    assert [r.template for r in find_rows(rows, "t.point.42")] == ["t.point.<NUM>"]
    assert find_rows(rows, "nothing") == ()
