"""
Running a fleet on Dask distributed: submit, collect, write, resume.

For each dump not already reported (:func:`current_report`), one
:func:`~dumpminer.fleet.tasks.plan_dump` task and one
:func:`~dumpminer.fleet.tasks.mine_cache` task per cache are submitted; as a
dump's tasks finish, its ``dumpminer.reports/1`` document (what ``mine
--format json`` writes, plus a ``fleet`` section: identity, host, settings)
is written atomically to the output folder under its identity's name. A
second run reads the reports that are current instead of mining again; an
interrupted run loses only the dumps in flight. Every dump is one
:class:`~dumpminer.fleet.model.DumpEntry`, whatever happened to it: each
identity is submitted once and its results are taken once.

Dask is imported here, inside the functions, never by ``dumpminer mine``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dumpminer.errors import InputFileError, OutputError, show_path
from dumpminer.fleet.aggregate import aggregate, find_rows, summarise_reports
from dumpminer.fleet.discover import find_dumps
from dumpminer.fleet.identity import DumpIdentity, identify
from dumpminer.fleet.model import FAILED, MINED, REUSED, CacheSummary, DumpEntry, FleetReport
from dumpminer.fleet.settings import MineSettings
from dumpminer.fleet.tasks import (
    EXIT_INTERNAL,
    CacheResult,
    FirstResult,
    Plan,
    TaskFailure,
    mine_cache,
    mine_first,
    warm_up,
)
from dumpminer.interrupts import set_handler
from dumpminer.report.jsontext import dumps as json_text
from dumpminer.report.output import write_atomically

if TYPE_CHECKING:
    from distributed import Client, Future

#: ``fleet`` section schema inside each per-dump report.
DUMP_SCHEMA = "dumpminer.fleet-dump/1"
#: How many times the embedded cluster's scheduler lets a task's worker die
#: before the task is failed (Dask's ``allowed-failures``).
ALLOWED_FAILURES = 2


def _identity_json(identity: DumpIdentity) -> dict[str, Any]:
    return {
        "digest": identity.digest,
        "size": identity.size,
        "format": identity.format,
        "osrelease": identity.osrelease,
        "build_id": identity.build_id,
        "crash_time": identity.crash_time,
    }


def current_report(
    path: str, identity: DumpIdentity, settings: MineSettings
) -> dict[str, Any] | None:
    """
    The report at *path*, when it is this dump's, mined with these counting
    settings; None when there is none or it is not current.
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    fleet = doc.get("fleet") if isinstance(doc, dict) else None
    if not isinstance(fleet, dict) or fleet.get("schema") != DUMP_SCHEMA:
        return None
    if fleet.get("identity", {}).get("digest") != identity.digest:
        return None
    if fleet.get("settings") != settings.counting():
        return None
    found: dict[str, Any] = doc
    return found


def _entry(
    identity: DumpIdentity,
    status: str,
    report: str | None,
    fleet: dict[str, Any] | None = None,
    caches: tuple[CacheSummary, ...] = (),
    failure: TaskFailure | None = None,
) -> DumpEntry:
    """A dump's entry, from its report's ``fleet`` section and caches, or its failure."""
    fleet = fleet or {}
    code, error = (
        (failure.exit_code, failure.error)
        if failure is not None
        else (int(fleet.get("exit_code", 0)), fleet.get("error"))
    )
    return DumpEntry(
        path=identity.path,
        digest=identity.digest,
        status=status,
        report=report,
        exit_code=code,
        error=error,
        host=fleet.get("host"),
        time=fleet.get("time"),
        time_source=fleet.get("time_source"),
        osrelease=identity.osrelease,
        build_id=identity.build_id,
        format=identity.format,
        size=identity.size,
        caches=caches,
        task_seconds=float(fleet.get("task_seconds", 0.0)),
    )


def _document(
    identity: DumpIdentity, settings: MineSettings, plan: Plan, results: list[CacheResult]
) -> tuple[str, dict[str, Any]]:
    """
    The per-dump report's text and its ``fleet`` section: what ``mine --format
    json`` writes (one ``dumpminer.report/1`` with ``--cache``, else
    ``dumpminer.reports/1``), with the ``fleet`` section added.
    """
    code = max((r.exit_code for r in results), default=0)
    fleet = {
        "schema": DUMP_SCHEMA,
        "path": identity.path,
        "identity": _identity_json(identity),
        "host": plan.host,
        "time": plan.time,
        "time_source": plan.time_source,
        "settings": settings.counting(),
        "exit_code": code,
        "error": "the dump lacks its page array: the report covers part of a cache"
        if code
        else None,
        "workers": sorted({plan.worker, *(r.worker for r in results)}),
        "task_seconds": round(plan.seconds + sum(r.seconds for r in results), 3),
        "worker_peak_rss_kib": _peaks(
            [(plan.worker, plan.peak_rss_kib)] + [(r.worker, r.peak_rss_kib) for r in results]
        ),
    }
    section = "  " + json_text(fleet, 1)
    if settings.cache is not None and len(results) == 1:
        # As mine --cache writes it: one dumpminer.report/1 document.
        single = "\n".join(line[4:] for line in results[0].text.split("\n"))
        text = single[: single.rindex("}")].rstrip() + ',\n  "fleet": ' + section.lstrip()
        return text + "\n}\n", fleet
    body = ",\n".join(r.text for r in results)
    text = (
        '{\n  "schema": "dumpminer.reports/1",\n  "reports": [\n'
        + body
        + '\n  ],\n  "fleet": '
        + section.lstrip()
        + "\n}\n"
    )
    return text, fleet


def _peaks(samples: list[tuple[str, int]]) -> dict[str, int]:
    """The largest peak RSS seen per worker."""
    peaks: dict[str, int] = {}
    for worker, peak in samples:
        peaks[worker] = max(peak, peaks.get(worker, 0))
    return dict(sorted(peaks.items()))


@dataclass
class _Pending:
    """A dump in flight: its tasks' futures and what came back so far."""

    identity: DumpIdentity
    futures: list[Future[Any]]
    plan: Plan | TaskFailure | None = None
    results: dict[int, CacheResult | TaskFailure | None] = field(default_factory=dict)


class FleetProgress:
    """What the caller is told as dumps finish (a progress bar, or nothing)."""

    def start(self, total: int, done: int) -> None:
        """*total* dumps, *done* of them already reported."""

    def finished(self, entry: DumpEntry) -> None:
        """One more dump, mined or failed."""

    def close(self) -> None:
        """The run is over."""


@contextlib.contextmanager
def _client(client: Client | None, scheduler: str | None) -> Iterator[Client]:
    """The user's client, one to *scheduler* (or Dask's configured one), or an embedded cluster."""
    if client is not None:
        yield client
        return
    import dask
    from distributed import Client, LocalCluster

    address = scheduler or dask.config.get("scheduler-address", None)
    if address:
        try:
            remote = Client(address, timeout="20s")
        except OSError as e:
            raise InputFileError(f"cannot reach the Dask scheduler at {address}: {e}") from e
        with remote:
            yield remote
        return
    cpus = len(os.sched_getaffinity(0))
    config = {
        "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
        # One task at a time per worker thread: a dump's next cache task, when
        # it is ready, goes where the dump is open before another dump's first.
        "distributed.scheduler.worker-saturation": 1.0,
        # Nor is a dump's task stolen away from the worker that has the dump open.
        "distributed.scheduler.work-stealing": False,
    }
    with dask.config.set(config):
        # Worker processes start with SIGINT ignored (inherited through exec), so
        # that Ctrl-C at a terminal, which reaches the whole process group, stops
        # the client (which closes the cluster) and not each worker with a traceback.
        previous = set_handler(signal.SIGINT, signal.SIG_IGN)
        try:
            cluster = LocalCluster(
                n_workers=cpus,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                # Dask's HTTP server always runs: on a free port, for this machine only.
                dashboard_address="127.0.0.1:0",
                silence_logs=50,
            )
        finally:
            if previous is not None:
                set_handler(signal.SIGINT, previous)
        with cluster, Client(cluster) as local:
            yield local


def _has_dashboard() -> bool:
    """Whether Dask's dashboard can run (it needs bokeh)."""
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def _submit(client: Client, identity: DumpIdentity, settings: MineSettings) -> _Pending:
    """
    A dump's tasks, all at once: the first plans the dump and mines its first
    cache; each further cache task takes the first's result as its input, so
    that Dask runs it where the dump is already open, as soon as the first is
    done, ahead of other dumps' first tasks (a higher priority), with no
    round trip through this client. A further task the plan has no cache for
    returns None.
    """
    first = client.submit(mine_first, identity.path, identity.digest, settings, pure=False)
    rest = [
        client.submit(mine_cache, identity.path, identity.digest, settings, first, i,
                      priority=1, pure=False)
        for i in range(1, settings.planned_caches())
    ]  # fmt: skip
    return _Pending(identity, [first, *rest])


def _settle(pending: _Pending, settings: MineSettings, out: str | None) -> DumpEntry:
    """Once every task of a dump is back: write its report, or say why it failed."""
    plan = pending.plan
    results = [pending.results[i] for i in sorted(pending.results)]
    failure = plan if isinstance(plan, TaskFailure) else None
    failure = failure or next((r for r in results if isinstance(r, TaskFailure)), None)
    if failure is not None or not isinstance(plan, Plan):
        failure = failure or TaskFailure("no plan came back", EXIT_INTERNAL)
        return _entry(pending.identity, FAILED, None, failure=failure)
    mined = [r for r in results if isinstance(r, CacheResult)]
    text, fleet = _document(pending.identity, settings, plan, mined)
    path = None
    if out is not None:
        path = os.path.join(out, pending.identity.report_name())
        write_atomically(path, text)
    return _entry(pending.identity, MINED, path, fleet, tuple(r.summary for r in mined))


def _worker_died(error: BaseException) -> TaskFailure:
    """A task whose workers kept dying, or that Dask could not run."""
    name = type(error).__name__
    if name == "KilledWorker":
        return TaskFailure(
            f"the worker mining it died {ALLOWED_FAILURES + 1} times (killed, or out of memory)",
            EXIT_INTERNAL,
        )
    text = str(error).splitlines()[0] if str(error) else ""
    return TaskFailure(f"Dask: {name}: {text}", EXIT_INTERNAL)


def _collect(
    client: Client,
    pendings: list[_Pending],
    settings: MineSettings,
    out: str | None,
    finished: Callable[[DumpEntry], None],
) -> list[DumpEntry]:
    """Take each task's result once, and settle each dump as its last task returns."""
    from distributed import as_completed

    owner: dict[Any, tuple[_Pending, int]] = {}
    for pending in pendings:
        for i, future in enumerate(pending.futures):
            owner[future.key] = (pending, i)
    entries: list[DumpEntry] = []
    left = {id(p): len(p.futures) for p in pendings}
    futures = [f for p in pendings for f in p.futures]
    try:
        for future in as_completed(futures):
            pending, i = owner[future.key]
            try:
                value: Any = future.result()
            except Exception as e:
                value = _worker_died(e)
            future.release()
            if isinstance(value, FirstResult):
                pending.plan, pending.results[0] = value.plan, value.result
            elif i == 0:  # the first task failed in Dask: the dump has no plan
                pending.plan = value
            else:
                pending.results[i] = value
            left[id(pending)] -= 1
            if left[id(pending)] == 0:
                entry = _settle(pending, settings, out)
                entries.append(entry)
                finished(entry)
    finally:
        client.cancel([f for f in futures if not f.done()])
    return entries


def check_out_dir(out: str) -> None:
    """Create the output folder, or refuse it (exit 8) before any dump is mined."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {show_path(out)}: {e.strerror}") from e
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {show_path(out)}: not a writable directory")


def fleet(
    paths: Sequence[str],
    *,
    out: str | None = None,
    settings: MineSettings | None = None,
    client: Client | None = None,
    scheduler: str | None = None,
    force: bool = False,
    find: str | None = None,
    progress: FleetProgress | None = None,
    on_dashboard: Callable[[str], None] | None = None,
) -> FleetReport:
    """
    Mine every dump *paths* name (dumps, folders searched for dumps, files
    listing dumps) on Dask, and return the fleet report. Each dump's report
    is written to *out* (when given) as it finishes; reports already there and
    current are reused unless *force*. With *client*, runs on the user's Dask client; with
    *scheduler* (or Dask's ``scheduler-address`` configuration), on that
    cluster; else on an embedded local cluster of one worker per usable CPU.
    """
    started = time.monotonic()
    settings = settings or MineSettings()
    progress = progress or FleetProgress()
    if out is not None:
        check_out_dir(out)
    dumps = find_dumps(list(paths))
    if not dumps:
        raise InputFileError("no dumps found in " + ", ".join(show_path(p) for p in paths))
    entries: list[DumpEntry] = []
    todo: list[DumpIdentity] = []
    seen: set[str] = set()
    for path in dumps:
        try:
            identity = identify(path)
        except OSError as e:
            failure = InputFileError(f"cannot read {show_path(path)}: {e.strerror}")
            identity = DumpIdentity(
                os.path.abspath(path), "unreadable:" + path, 0, None, None, None, None
            )
            lost = TaskFailure(str(failure), failure.exit_code)
            entries.append(_entry(identity, FAILED, None, failure=lost))
            continue
        if identity.digest in seen:
            continue  # the same dump under two paths is mined and counted once
        seen.add(identity.digest)
        report = None if out is None else os.path.join(out, identity.report_name())
        doc = None if force or report is None else current_report(report, identity, settings)
        if doc is not None:
            entries.append(_entry(identity, REUSED, report, doc["fleet"], summarise_reports(doc)))
        else:
            todo.append(identity)
    progress.start(len(entries) + len(todo), len(entries))
    dashboard = None
    ready, workers = started, 0
    try:
        if todo:
            with _client(client, scheduler) as c:
                c.run(warm_up)
                ready, workers = time.monotonic(), len(c.scheduler_info()["workers"])
                dashboard = _dashboard(c)
                if dashboard and on_dashboard is not None:
                    on_dashboard(dashboard)
                pendings = [_submit(c, identity, settings) for identity in todo]
                entries.extend(_collect(c, pendings, settings, out, progress.finished))
    finally:
        progress.close()
    order = {path: i for i, path in enumerate(dumps)}
    entries.sort(key=lambda e: order.get(e.path, len(order)))
    rows = aggregate(entries)
    timing = {
        "seconds": round(time.monotonic() - started, 3),
        "start_seconds": round(ready - started, 3),
        "workers": workers,
        "task_seconds": round(sum(e.task_seconds for e in entries if e.status == MINED), 3),
    }
    return FleetReport(
        settings=settings.counting(),
        dumps=tuple(entries),
        templates=rows,
        find=find,
        found=() if find is None else find_rows(rows, find),
        out=None if out is None else os.path.abspath(out),
        dashboard=dashboard,
        timing=timing,
    )


def _dashboard(client: Client) -> str | None:
    """
    The Dask dashboard's address, when one runs: Dask names one even without
    bokeh, which its pages need.
    """
    if not _has_dashboard():
        return None
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        link = client.dashboard_link
    except (KeyError, AttributeError, OSError):
        return None
    return str(link) if link else None
