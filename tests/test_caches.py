"""Cache names: the story's old SLAB names and globs of them."""

from __future__ import annotations

import pytest

from dumpminer.slub.caches import modern_name


@pytest.mark.parametrize(
    ("asked", "meant"),
    [
        ("size-32", "kmalloc-32"),
        ("size-32(DMA)", "dma-kmalloc-32"),
        ("size-*", "kmalloc-*"),
        ("size-3?", "kmalloc-3?"),
        ("kmalloc-32", "kmalloc-32"),
        ("sizeable", "sizeable"),
    ],
)
def test_modern_name(asked: str, meant: str) -> None:
    assert modern_name(asked) == meant
