"""Cache names: the story's old SLAB names and globs of them."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from conftest import REPO_ROOT
from drgn.helpers.linux.slab import for_each_slab_cache

from dumpminer.slub.caches import kmalloc_spellings, modern_name


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


@pytest.mark.parametrize(
    ("asked", "spellings"),
    [
        ("kmalloc-1024", ["kmalloc-1024", "kmalloc-1k"]),
        ("kmalloc-4k", ["kmalloc-4k", "kmalloc-4096"]),
        ("dma-kmalloc-2048", ["dma-kmalloc-2048", "dma-kmalloc-2k"]),
        ("kmalloc-cg-1024", ["kmalloc-cg-1024", "kmalloc-cg-1k"]),
        ("kmalloc-96", ["kmalloc-96"]),
        ("kmalloc-1000", ["kmalloc-1000"]),
        ("dentry", ["dentry"]),
    ],
)
def test_kmalloc_spellings(asked: str, spellings: list[str]) -> None:
    assert kmalloc_spellings(asked) == spellings


@pytest.mark.parametrize("size", [32, 1024, 2048, 4096])
def test_old_names_of_every_kmalloc_size(
    sample_manifest: dict[str, Any], open_prog: Any, size: int
) -> None:
    """crash's size-N names the kmalloc cache of N bytes, whatever the kernel calls it."""
    vmcore = next(d["path"] for d in sample_manifest["dumps"] if d["format"] == "kdump")
    vmlinux = sample_manifest["vmlinux"]
    prog = open_prog(vmcore, vmlinux)
    (meant,) = [
        c.name.string_().decode()
        for c in for_each_slab_cache(prog)
        if c.name.string_().decode() in (f"kmalloc-{size}", f"kmalloc-{size // 1024}k")
    ]
    for asked in (f"size-{size}", f"kmalloc-{size}"):
        done = subprocess.run(
            [sys.executable, "-m", "dumpminer", "mine", vmcore, "--vmlinux", vmlinux,
             "--cache", asked, "--top", "1", "--format", "json", "--quiet"],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["cache"]["caches"] == [meant]
