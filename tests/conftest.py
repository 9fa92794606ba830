"""Shared fixtures: real sample vmcores built (or reused) by sample_dumps/build.py.

``sample_manifest`` is parametrized over the kernel series (ids ``linux-6.1``,
``linux-6.12`` and ``linux-5.10``, Debian 11's kernel with the slab fields in ``struct
page``); set ``DUMPMINER_SERIES=6.1`` (comma-separated list) to run one series only.
A build failure fails the tests that use the fixture; it never skips them.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
for _path in (str(REPO_ROOT), str(TESTS_DIR)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import drgn  # noqa: E402
from oracle import open_prog as _open_prog  # noqa: E402

from sample_dumps.build import build_sample  # noqa: E402

ALL_SERIES = ("6.1", "6.12", "5.10")


def selected_series() -> list[str]:
    """The series to test: all, or those listed in $DUMPMINER_SERIES."""
    wanted = os.environ.get("DUMPMINER_SERIES", "").strip()
    if not wanted:
        return list(ALL_SERIES)
    chosen = [s.strip() for s in wanted.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(ALL_SERIES))
    if unknown:
        raise pytest.UsageError(f"DUMPMINER_SERIES names unknown series {unknown}")
    return chosen


@pytest.fixture(
    scope="session",
    params=selected_series(),
    ids=lambda series: f"linux-{series}",
)
def sample_manifest(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The parsed manifest of the "seed" sample of one series (built on first use)."""
    manifest_path = build_sample("seed", request.param)
    manifest: dict[str, Any] = json.loads(Path(manifest_path).read_text())
    return manifest


def default_sigint() -> None:
    """
    ``preexec_fn`` for a child that a test interrupts with SIGINT: SIGINT at
    its default, as a program started from a terminal has it. A test run
    started in the background by a non-interactive shell (``cmd &`` in a
    CI script) inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt, so a Ctrl-C test would test nothing.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def unprivileged() -> tuple[str, ...]:
    """
    A command prefix that runs a program as a user held to file modes. As
    root: root without any capability (no CAP_DAC_OVERRIDE), via util-linux's
    setpriv, so that a file with mode 0 is unreadable and a directory with
    mode 555 unwritable, while the interpreter (which may live under /root)
    is still found. As any other user: nothing.
    """
    if os.geteuid() != 0:
        return ()
    return ("setpriv", "--inh-caps=-all", "--bounding-set=-all", "--")


@pytest.fixture(scope="session")
def open_prog() -> Callable[[str, str], drgn.Program]:
    """open_prog(vmcore_path, vmlinux) -> drgn.Program (see tests/oracle.py)."""
    return _open_prog


@pytest.fixture(scope="session")
def slub_debug_manifest() -> dict[str, Any]:
    """The "slub-debug" sample (seed booted with slub_debug=FZPU) on 6.1, built on first use."""
    if "6.1" not in selected_series():
        pytest.skip("DUMPMINER_SERIES leaves out 6.1, the series of the slub-debug sample")
    manifest_path = build_sample("slub-debug", "6.1")
    manifest: dict[str, Any] = json.loads(Path(manifest_path).read_text())
    return manifest


@pytest.fixture(scope="session")
def kfence_manifest() -> dict[str, Any]:
    """
    The "kfence" sample: seed on Debian's generic 6.12 kernel (the one Debian kernel here
    with CONFIG_KFENCE) booted with kfence.sample_interval=1, built on first use.
    """
    if "6.12" not in selected_series():
        pytest.skip("DUMPMINER_SERIES leaves out 6.12, the series of the kfence sample")
    manifest_path = build_sample("kfence", "6.12-generic")
    manifest: dict[str, Any] = json.loads(Path(manifest_path).read_text())
    return manifest
