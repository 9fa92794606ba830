"""
The fleet's progress bar: one bar over dumps (done, failed, left, rate, ETA),
on stderr, only when the caller asks for it (the command line: a terminal).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dumpminer.fleet.model import FAILED, DumpEntry
from dumpminer.fleet.run import FleetProgress

if TYPE_CHECKING:
    from tqdm import tqdm


class DumpBar(FleetProgress):
    """A tqdm bar that counts dumps; reports reused count as done from the start."""

    def __init__(self) -> None:
        self._bar: tqdm[Any] | None = None
        self._failed = 0
        self._total = 0
        self._done = 0

    def start(self, total: int, done: int) -> None:
        from tqdm import tqdm

        self._total, self._done = total, done
        self._bar = tqdm(total=total, initial=done, unit="dump", desc="fleet", leave=False)
        self._show()

    def _show(self, refresh: bool = True) -> None:
        if self._bar is not None:
            left = self._total - self._done
            self._bar.set_postfix_str(f"failed {self._failed}, left {left}", refresh=refresh)

    def finished(self, entry: DumpEntry) -> None:
        self._done += 1
        if entry.status == FAILED:
            self._failed += 1
        self._show(refresh=False)
        if self._bar is not None:
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
