"""
The ``%dumpminer`` drgn command (issue 14), run by drgn itself on a sample dump.

drgn loads plugins from the ``drgn.plugins`` entry point (pyproject.toml) or
from ``DRGN_PLUGINS=name=module``; the test uses the latter so that the
worktree's module is the one loaded whatever is installed, and checks that
the entry point names the same module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from typing import Any

from conftest import REPO_ROOT

PLUGIN_MODULE = "dumpminer.drgn_plugin"


def _drgn(vmcore: str, vmlinux: str, command: str) -> subprocess.CompletedProcess[str]:
    drgn = shutil.which("drgn") or os.path.join(os.path.dirname(sys.executable), "drgn")
    env = dict(os.environ, DRGN_PLUGINS=f"dumpminer={PLUGIN_MODULE}", PYTHONPATH=str(REPO_ROOT))
    code = f"from drgn.commands import run_command; run_command(prog, {command!r})"
    return subprocess.run(
        [drgn, "-q", "-c", vmcore, "-s", vmlinux, "-e", code],
        capture_output=True, text=True, timeout=600, check=False, env=env, cwd=REPO_ROOT,
    )  # fmt: skip


def test_entry_point_names_the_plugin() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["drgn.plugins"]["dumpminer"] == PLUGIN_MODULE


def test_drgn_command_prints_the_mine_table(sample_manifest: dict[str, Any]) -> None:
    # drgn's own CLI opens QEMU's kdump only with the platform given, so use the ELF dump.
    entry = next(d for d in sample_manifest["dumps"] if d["format"] == "elf")
    vmlinux = sample_manifest["vmlinux"]
    done = _drgn(entry["path"], vmlinux, "dumpminer --cache kmalloc-32 --top 12")
    assert done.returncode == 0, done.stderr
    mine = subprocess.run(
        [sys.executable, "-m", "dumpminer.cli", "mine", entry["path"], "--vmlinux", vmlinux,
         "--cache", "kmalloc-32", "--top", "12", "--quiet"],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO_ROOT,
    )  # fmt: skip
    assert mine.returncode == 0, mine.stderr

    def stable(text: str) -> list[str]:
        # The walk's seconds differ between runs; the rest is the same table.
        return [line for line in text.splitlines() if not line.startswith("scanned ")]

    assert stable(done.stdout) == stable(mine.stdout)
    # And both say what was planted: each planted string and template of
    # kmalloc-32 (the sample's manifest) is a row with its planted count.
    planted = sample_manifest["planted"]["kmalloc-32"]
    rows = _table_rows(done.stdout)
    for template, count in planted["templates"].items():
        assert rows[template] == count, template
    for text in ("sbin/*agt/", "t.point.*", "@Vv*/"):
        assert rows[text] == planted["strings"][text], text


def _table_rows(table: str) -> dict[str, int]:
    """The table's rows as template -> objects (ranks, counts, share, ..., template last)."""
    rows = {}
    for line in table.splitlines():
        cells = line.split()
        if len(cells) >= 7 and cells[0].isdigit() and cells[1].isdigit():
            rows[cells[-1]] = int(cells[1])
    return rows


def test_loading_the_plugin_imports_nothing_heavy() -> None:
    """Every drgn session of a user with dumpminer installed loads the plugin: it stays light."""
    code = (
        "import sys, dumpminer.drgn_plugin as p; "
        "heavy = sorted(m for m in sys.modules if m == 'numpy' or "
        "(m.startswith('dumpminer.') and m not in ('dumpminer.drgn_plugin',))); "
        "print(heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        check=False, cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_plugin_default_min_length_is_mines() -> None:
    from dumpminer import drgn_plugin
    from dumpminer.extract.fragments import DEFAULT_MIN_LENGTH

    assert drgn_plugin.DEFAULT_MIN_LENGTH == DEFAULT_MIN_LENGTH


def test_drgn_command_help(sample_manifest: dict[str, Any]) -> None:
    entry = next(d for d in sample_manifest["dumps"] if d["format"] == "elf")
    done = _drgn(entry["path"], sample_manifest["vmlinux"], "dumpminer --help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: dumpminer") and "--cache CACHE" in done.stdout
    assert "Traceback" not in done.stderr
