"""The engine shows every allocated object to observers: checked against drgn's slab helpers."""

from __future__ import annotations

from typing import Any

import pytest
from drgn import Object, Program
from oracle import allocated_objects

from dumpminer.extract.observers import ObjectBatch
from dumpminer.scan.engine import PassOptions, mine_pages
from dumpminer.slub.caches import resolve_caches
from dumpminer.slub.walk import WalkStats, find_slab_pages


class Recorder:
    """Keeps every object's address, its caller bytes and its whole stride."""

    def __init__(self) -> None:
        self.objects: dict[int, bytes] = {}
        self.strides: dict[int, int] = {}
        self.begun = 0

    def begin(self, prog: Program, caches: list[Object]) -> None:
        self.begun += 1

    def observe(self, batch: ObjectBatch) -> list[tuple[int, bytes, int]]:
        objects = batch.objects
        return [
            (int(a), objects[i].tobytes(), batch.rows.shape[1])
            for i, a in enumerate(batch.addresses)
        ]

    def absorb(self, partial: list[tuple[int, bytes, int]]) -> None:
        for address, data, stride in partial:
            assert address not in self.objects, f"{address:#x} seen twice"
            self.objects[address] = data
            self.strides[address] = stride

    def merge(self, other: Recorder) -> None:
        self.objects.update(other.objects)


@pytest.mark.parametrize("cache_name", ["kmalloc-96", "kmalloc-32"])
def test_observer_sees_every_allocated_object(
    sample_manifest: dict[str, Any], open_prog: Any, cache_name: str
) -> None:
    dump = next(d for d in sample_manifest["dumps"] if d["format"] == "kdump")
    oracle = open_prog(dump["path"], sample_manifest["vmlinux"])
    expected = allocated_objects(oracle, cache_name)

    prog = open_prog(dump["path"], sample_manifest["vmlinux"])
    caches = resolve_caches(prog, cache_name)
    pages = find_slab_pages(prog, {c.value_() for c in caches}, WalkStats(), False)
    result = mine_pages(prog, caches, pages, PassOptions(observers=(Recorder,)))
    (recorder,) = result.observers
    assert isinstance(recorder, Recorder)
    assert recorder.begun == 1
    assert sorted(recorder.objects) == sorted(expected)
    size = caches[0].object_size.value_()
    stride = caches[0].size.value_()
    for address in expected[:: max(1, len(expected) // 200)]:
        assert recorder.objects[address] == oracle.read(address, size)
        assert recorder.strides[address] == stride
    # The fragment tally saw the same objects.
    assert result.stats.objects_scanned == len(expected)
