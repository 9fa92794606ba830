"""
The work a Dask worker does for a fleet: today's ``mine``, one task per dump
and cache.

One task per dump and cache. The first, :func:`mine_first`, opens the dump,
says which caches to mine (``--cache``, or the largest, as ``mine`` chooses
them), its host name and time (:func:`plan_dump`), and mines the first cache;
the others, :func:`mine_cache`, take the first's result as their input (Dask
runs them where it ran, once it is done) and mine one cache each. Each runs
:func:`dumpminer.mine` on its cache, unchanged, and returns the cache's
``dumpminer.report/1`` JSON text and the few numbers the fleet report needs.
A task never raises for a bad dump: it returns a :class:`TaskFailure` with
the one-line error and exit code ``mine`` would have ended with, so that
Dask neither retries it nor stops the others. (A worker that dies is another
matter: the scheduler retries its tasks elsewhere, a bounded number of times.)

A worker keeps one dump open, for the further caches of the dump it opened
last (they run ahead of other dumps' first tasks). Opening another dump
releases it first, and gives its heap back to the kernel
(:func:`release_memory`), so that a worker's peak is that of one ``mine``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import resource
import socket
import time
from dataclasses import dataclass, replace
from typing import Any

from drgn import FaultError

from dumpminer.dump.dumptime import dump_time
from dumpminer.dump.open import Dump, open_dump
from dumpminer.errors import DumpminerError, KernelDataError, first_line
from dumpminer.fleet.aggregate import CacheSummary, summarise_report
from dumpminer.fleet.settings import MineSettings
from dumpminer.pipeline import mine
from dumpminer.report.jsontext import dumps as json_text
from dumpminer.report.model import DumpTime

#: The exit code of a failure that is a bug, or a worker that died.
EXIT_INTERNAL = 1


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """Why a dump could not be mined: ``mine``'s one-line error and exit code."""

    error: str
    exit_code: int


@dataclass(frozen=True, slots=True)
class Plan:
    """What :func:`plan_dump` found: the caches to mine and the dump's host and time."""

    caches: tuple[str, ...]
    #: ``init_uts_ns.name.nodename``; None when unreadable.
    host: str | None
    time: int | None
    time_source: str | None
    #: What :func:`~dumpminer.dump.open_dump` says on stderr (e.g. read on BTF).
    note: str | None
    #: Which worker planned (for tests and the log).
    worker: str
    #: The task's wall time, and the worker's peak RSS (KiB) when it ended.
    seconds: float = 0.0
    peak_rss_kib: int = 0


@dataclass(frozen=True, slots=True)
class CacheResult:
    """One cache of one dump, mined."""

    #: The ``dumpminer.report/1`` document, as ``mine --format json`` writes it
    #: inside a ``dumpminer.reports/1`` document (indented by four spaces).
    text: str
    summary: CacheSummary
    #: ``mine``'s exit code for this cache alone: 0, or 10 when the dump lacks its page array.
    exit_code: int
    worker: str
    #: The task's wall time, and the worker's peak RSS (KiB) when it ended.
    seconds: float = 0.0
    peak_rss_kib: int = 0


#: The one dump this worker process has open, whose further caches are
#: coming: ((path, digest), Dump).
_OPEN: dict[tuple[str, str], Dump] = {}


def release_memory() -> None:
    """
    Collect the released dump's cycles and hand the freed heap back to the
    kernel (glibc's ``malloc_trim``), so that the next dump's peak does not
    stand on the last one's.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _opened(path: str, digest: str, settings: MineSettings) -> Dump:
    """The dump at *path*, opened once per worker while its tasks last."""
    key = (path, digest)
    dump = _OPEN.pop(key, None)
    if dump is None:
        if _OPEN:
            _OPEN.clear()  # the last dump's program is released
            release_memory()
        logging.getLogger("drgn").setLevel(logging.ERROR)
        dump = open_dump(
            path,
            settings.vmlinux,
            list(settings.debug_dirs),
            use_vmlinux=settings.use_vmlinux,
            debuginfod=settings.debuginfod,
        )
    _OPEN[key] = dump
    return dump


def _worker_name() -> str:
    """This worker's address, or the host name outside a Dask worker."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return socket.gethostname()


def _failure(error: BaseException) -> TaskFailure:
    """The failure ``dumpminer mine`` would have reported for *error*."""
    if isinstance(error, DumpminerError):
        return TaskFailure(str(error), error.exit_code)
    if isinstance(error, FaultError):
        return TaskFailure(
            f"kernel data needed before the walk is unreadable: {first_line(error)}",
            KernelDataError.exit_code,
        )
    return TaskFailure(
        f"internal error: {type(error).__name__}: {first_line(error)}", EXIT_INTERNAL
    )


def peak_rss_kib() -> int:
    """This worker process's peak resident memory so far, in KiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def warm_up() -> None:
    """
    Import what the tasks need, once per worker, before the first dump is
    timed; then move everything the worker holds so far (Dask, the modules)
    out of the cycle collector's sight (``gc.freeze``): the collection after
    each task then walks what the dumps made, not the whole worker.
    """
    import dumpminer.pipeline
    import dumpminer.report.json
    import dumpminer.slub.slabinfo  # noqa: F401

    gc.collect()
    gc.freeze()


def node_name(dump: Dump) -> str | None:
    """The dump's host name (``init_uts_ns.name.nodename``), or None when unreadable."""
    try:
        name = dump.prog["init_uts_ns"].name.nodename.string_()
    except (KeyError, LookupError, FaultError, AttributeError, ValueError):
        return None
    return bytes(name).decode(errors="replace") or None


def plan_dump(path: str, digest: str, settings: MineSettings) -> Plan | TaskFailure:
    """Open the dump at *path* and choose its caches as ``mine`` does."""
    started = time.monotonic()
    try:
        dump = _opened(path, digest, settings)
        if settings.cache is not None:
            names: tuple[str, ...] = (settings.cache,)
        else:
            from dumpminer.slub.slabinfo import slab_info

            caches = slab_info(dump.prog).caches[: settings.caches_top]
            names = tuple(line.usage.name for line in caches)
        taken = dump_time(dump.info, dump.prog)
        return Plan(
            names,
            node_name(dump),
            taken[0],
            taken[1],
            dump.note,
            _worker_name(),
            time.monotonic() - started,
            peak_rss_kib(),
        )
    except Exception as e:
        _OPEN.clear()
        return _failure(e)


@dataclass(frozen=True, slots=True)
class FirstResult:
    """What :func:`mine_first` returns: the dump's plan and its first cache."""

    plan: Plan | TaskFailure
    result: CacheResult | TaskFailure | None


def mine_first(path: str, digest: str, settings: MineSettings) -> FirstResult:
    """Plan the dump at *path* and mine its first cache, in one task (one open)."""
    plan = plan_dump(path, digest, settings)
    return FirstResult(plan, mine_cache(path, digest, settings, plan, 0))


def indented(doc: dict[str, Any]) -> str:
    """*doc* as JSON, as it appears in a ``dumpminer.reports/1`` document's list."""
    return "    " + json_text(doc, 2)


def mine_cache(
    path: str,
    digest: str,
    settings: MineSettings,
    plan: Plan | TaskFailure | FirstResult,
    index: int,
) -> CacheResult | TaskFailure | None:
    """
    Mine cache number *index* of *plan* in the dump at *path* with today's
    :func:`dumpminer.mine`; None when the dump has fewer caches than that.
    """
    if isinstance(plan, FirstResult):
        plan = plan.plan
    if isinstance(plan, TaskFailure):
        return plan
    if index >= len(plan.caches):
        return None
    from dumpminer.report.json import to_json_dict

    started = time.monotonic()
    try:
        dump = _opened(path, digest, settings)
        report = mine(dump.prog, plan.caches[index], settings.mine_options(), dump=dump)
        report = replace(
            report, dump=replace(report.dump, taken=DumpTime(plan.time, plan.time_source))
        )
        doc = to_json_dict(report)
    except Exception as e:
        _OPEN.clear()
        return _failure(e)
    from dumpminer.errors import EXIT_INCOMPLETE_DUMP

    code = EXIT_INCOMPLETE_DUMP if report.partial else 0
    text, summary = indented(doc), summarise_report(doc)
    del doc, report
    gc.collect()  # the report's cycles, before the next task: a worker's peak is one mine's
    seconds = time.monotonic() - started
    return CacheResult(text, summary, code, _worker_name(), seconds, peak_rss_kib())
