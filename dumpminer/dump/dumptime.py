"""
When a dump was taken: the header's crash time, else the kernel's own clock.

A kdump header and VMCOREINFO ``CRASHTIME`` carry the crash time, but QEMU's
``dump-guest-memory`` writes neither (no crash happened). The kernel keeps
wall-clock time in ``tk_core.timekeeper.xtime_sec`` (seconds since the
epoch, updated every tick), so a dump holds its own time to within a tick
of the moment the CPUs stopped. Which one was used is always said.
"""

from __future__ import annotations

import datetime
from typing import Any

from drgn import FaultError, Object, Program, alignof, sizeof

from dumpminer.dump.info import DumpInfo

#: ``time_source`` values.
HEADER = "header"
KERNEL_CLOCK = "tk_core.timekeeper.xtime_sec"


def kernel_clock_seconds(prog: Program) -> int | None:
    """
    The kernel's wall-clock seconds (``CLOCK_REALTIME``) in the program, or
    None when the variable is missing, unreadable or not set (zero).
    """
    try:
        try:
            timekeeper = prog["tk_core"].timekeeper
        except LookupError:
            timekeeper = _timekeeper_by_symbol(prog)
        seconds = int(timekeeper.xtime_sec.value_())
    except (KeyError, LookupError, FaultError, AttributeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def _timekeeper_by_symbol(prog: Program) -> Object:
    """
    ``tk_core.timekeeper`` without ``tk_core``'s type, as on BTF (which has
    no variables, and ``tk_core``'s struct has no name): kernel/time/
    timekeeping.c declares ``static struct { seqcount_raw_spinlock_t seq;
    struct timekeeper timekeeper; } tk_core``, so the timekeeper follows the
    sequence count, aligned.
    """
    timekeeper = prog.type("struct timekeeper")
    offset = sizeof(prog.type("seqcount_raw_spinlock_t"))
    align = alignof(timekeeper)
    offset = (offset + align - 1) // align * align
    address = prog.symbol("tk_core").address + offset
    return Object(prog, timekeeper, address=address)


def dump_time(info: DumpInfo | None, prog: Program | None) -> tuple[int | None, str | None]:
    """
    The dump's time in Unix seconds and its source: the header's crash time
    when there is one, else the kernel clock when *prog* can read it, else
    ``(None, None)``.
    """
    if info is not None and info.crash_time:
        return info.crash_time, HEADER
    if prog is not None:
        seconds = kernel_clock_seconds(prog)
        if seconds is not None:
            return seconds, KERNEL_CLOCK
    return None, None


def iso_utc(seconds: int | None) -> str | None:
    """
    Unix *seconds* as UTC in ISO 8601, ``2026-12-07T21:39:08Z``, for people
    beside the number that programs read; None for None or a time that is
    out of range.
    """
    if seconds is None:
        return None
    try:
        when = datetime.datetime.fromtimestamp(int(seconds), datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def shown_time(seconds: int | None) -> str:
    """``1796672912 (2026-12-07T21:48:32Z)``: the number and the date; ``-`` without one."""
    if seconds is None:
        return "-"
    iso = iso_utc(seconds)
    return f"{seconds}" + (f" ({iso})" if iso else "")


def time_facts(info: DumpInfo | None, prog: Program | None) -> dict[str, Any]:
    """
    ``{"time": seconds, "time_source": ..., "time_utc": ISO 8601}`` for
    ``info``'s facts.
    """
    seconds, source = dump_time(info, prog)
    return {"time": seconds, "time_source": source, "time_utc": iso_utc(seconds)}
