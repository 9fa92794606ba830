"""
``dumpminer fleet`` (issue 25) on real Dask processes and real sample dumps.

A real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, and
separately the embedded local cluster. The fleet: the seed sample of each
series in its three formats, the diff pair, slub-debug, a dump cut short and a
file that is not a dump. Oracles: each dump's report equals a separate
``dumpminer mine --format json`` of it (and each failure that run's one line
and exit code); the fleet's rows equal rows computed here from those separate
reports (the code below imports nothing from dumpminer). A worker killed mid-run
and a client interrupted with SIGINT lose nothing and count nothing twice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import default_sigint, selected_series
from oracle import open_prog
from test_html import load_in_chromium

from sample_dumps.build import build_pair, build_sample

REPO = Path(__file__).resolve().parent.parent
KERNELS = Path.home() / ".cache" / "dumpminer" / "kernels"
#: The cache every fleet of these tests mines (kmalloc-32: a second or two a dump).
CACHE = "kmalloc-32"
TIMEOUT = 900


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


def _cli(*args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dumpminer", *args],
        capture_output=True, text=True, cwd=REPO, env=_env(), timeout=timeout, check=False,
    )  # fmt: skip


def _fleet_args(out: Path, *paths: str, cache: str | None = CACHE) -> list[str]:
    args = ["fleet", *paths, "--debug-dir", str(KERNELS), "--out", str(out), "--quiet"]
    return [*args, "--cache", cache] if cache else args


# --------------------------------------------------------------------------
# The fleet and its oracle: a separate `dumpminer mine` of each dump
# --------------------------------------------------------------------------


def _reports(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The reports of a mine document: one (--cache) or several."""
    reports: list[dict[str, Any]] = doc.get("reports", [doc])
    return reports


def _dumps_of(manifest: dict[str, Any]) -> list[str]:
    return [d["path"] for d in manifest["dumps"]]


@pytest.fixture(scope="module")
def fleet_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every sample dump of the selected series, a dump cut short and a file that is not one."""
    work = tmp_path_factory.mktemp("fleet-input")
    seeds, others = [], []
    for series in selected_series():
        seed = json.loads(Path(build_sample("seed", series)).read_text())
        seeds.append(seed)
        pair = json.loads(Path(build_pair("pair", series)).read_text())
        for side in ("old", "new"):
            others += _dumps_of(pair[side])
    if "6.1" in selected_series():
        others += _dumps_of(json.loads(Path(build_sample("slub-debug", "6.1")).read_text()))
    cut = work / "cut.vmcore"
    kdump = next(d["path"] for d in seeds[0]["dumps"] if d["format"] == "kdump")
    with open(kdump, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(os.path.getsize(kdump) // 2))
    junk = work / "notes.bin"
    junk.write_bytes(b"\x00\x01 not a dump, whatever its name says\n" * 100)
    # A listing file names the pair and slub-debug dumps; the seeds come as folders.
    listing = work / "dumps.txt"
    listing.write_text("# the fleet\n" + "\n".join(others) + "\n")
    folders = [str(Path(_dumps_of(s)[0]).parent) for s in seeds]
    dumps = [p for s in seeds for p in sorted(_dumps_of(s))] + others
    return {
        "args": [*folders, str(listing), str(cut), str(junk)],
        "dumps": [*dumps, str(cut), str(junk)],
        # Smaller fleets for the runs that are stopped half way.
        "seeds_args": [*folders, str(cut), str(junk)],
        "seeds_dumps": [*[p for s in seeds for p in sorted(_dumps_of(s))], str(cut), str(junk)],
        "listed_args": [str(listing), str(junk)],
        "listed_dumps": [*others, str(junk)],
        "seed_folder": folders[0],
        "junk": str(junk),
    }


def _separate(path: str, out: Path, cache: str | None) -> dict[str, Any]:
    """A separate `dumpminer mine --format json` of one dump: its document or its failure."""
    target = out / (re.sub(r"\W", "_", path) + ".json")
    extra = ["--cache", cache] if cache else []
    done = _cli("mine", path, "--debug-dir", str(KERNELS), "--format", "json", "-o", str(target),
                "--quiet", *extra)  # fmt: skip
    result: dict[str, Any] = {"exit_code": done.returncode, "stderr": done.stderr.strip()}
    if done.returncode in (0, 10):
        result["doc"] = json.loads(target.read_text())
    return result


def _separate_all(paths: list[str], out: Path, cache: str | None) -> dict[str, dict[str, Any]]:
    out.mkdir(exist_ok=True)
    with ThreadPoolExecutor(2) as pool:
        results = pool.map(lambda p: _separate(p, out, cache), paths)
        return dict(zip(paths, results, strict=True))


@pytest.fixture(scope="module")
def separate(
    fleet_paths: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """Each dump of the fleet mined alone (kmalloc-32), by path."""
    return _separate_all(fleet_paths["dumps"], tmp_path_factory.mktemp("separate"), CACHE)


@pytest.fixture(scope="module")
def hosts(fleet_paths: dict[str, Any], separate: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Each good dump's node name, read with drgn (init_uts_ns), by path."""
    names = {}
    for path, result in separate.items():
        if "doc" not in result:
            continue
        vmlinux = _reports(result["doc"])[0]["dump"]["vmlinux"]
        prog = open_prog(path, vmlinux)
        names[path] = prog["init_uts_ns"].name.nodename.string_().decode()
    return names


# --------------------------------------------------------------------------
# The oracle of the fleet's rows (no dumpminer import)
# --------------------------------------------------------------------------

_SLOT = re.compile(r"<NUM>|<HEX>|<\*>")
_SLOT_RE = {"<NUM>": r"(?:0[xX])?[0-9A-Fa-f]+", "<HEX>": r"(?:0[xX])?[0-9A-Fa-f]+",
            "<*>": r"[A-Za-z0-9]+"}  # fmt: skip


def _fits(template: str, text: str) -> bool:
    """Whether the literal *text* is one of *template*'s members (docs/fleet.md)."""
    parts = _SLOT.split(template)
    pattern = re.escape(parts[0]) + "".join(
        _SLOT_RE[s] + re.escape(p) for s, p in zip(_SLOT.findall(template), parts[1:], strict=True)
    )
    return re.fullmatch(pattern, text, re.DOTALL) is not None


def oracle_rows(dumps: dict[str, dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """
    The fleet's rows from separate reports: *dumps* maps a path to its
    ``{"doc": reports/1, "host": ..., "time": ...}``. Keyed by (cache, template).
    """
    by_cache: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    weight: dict[tuple[str, str], int] = defaultdict(int)
    allocated: dict[tuple[str, str], int] = {}
    for path, dump in dumps.items():
        for report in _reports(dump["doc"]):
            name = report["cache"]["name"]
            allocated[path, name] = report["cache"]["allocated"]
            for cluster in report["clusters"]:
                key = cluster["template"].replace("<HEX>", "<NUM>")
                counts = by_cache[name][key]
                counts[path] = counts.get(path, 0) + cluster["objects"]
                weight[name, cluster["template"]] += cluster["objects"]
    rows = {}
    for name, keys in by_cache.items():
        total = {k: sum(v.values()) for k, v in keys.items()}
        slotted = sorted((k for k in keys if _SLOT.search(k)), key=lambda k: (-total[k], k))
        members: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            into = key
            if key not in slotted and not key.startswith("<fill "):
                into = next((s for s in slotted if _fits(s, key)), key)
            members[into].append(key)
        for keys_in in members.values():
            counts: dict[str, int] = defaultdict(int)
            for key in keys_in:
                for path, n in keys[key].items():
                    counts[path] += n
            sources = {
                t for (c, t) in weight if c == name and t.replace("<HEX>", "<NUM>") in keys_in
            }
            shown = min([s for s in sources if _SLOT.search(s)] or sources,
                        key=lambda s: (-weight[name, s], s))  # fmt: skip
            shares = [round(n / allocated[p, name], 6) for p, n in counts.items()]
            times = [dumps[p]["time"] for p in counts if dumps[p]["time"] is not None]
            growth = []
            per_host: dict[str, list[tuple[int, int]]] = defaultdict(list)
            for path, dump in dumps.items():
                if (path, name) in allocated and dump["time"] is not None:
                    per_host[dump["host"]].append((dump["time"], counts.get(path, 0)))
            for host, points in sorted(per_host.items()):
                first, last = min(t for t, _ in points), max(t for t, _ in points)
                if len(points) > 1 and last > first:
                    old = statistics.fmean(n for t, n in points if t == first)
                    new = statistics.fmean(n for t, n in points if t == last)
                    growth.append((host, round((new - old) / ((last - first) / 3600), 3)))
            rows[name, shown] = {
                "objects": sum(counts.values()),
                "per_dump": sorted(counts.items()),
                "share": [min(shares), round(statistics.median(shares), 6), max(shares)],
                "first_seen": min(times, default=None),
                "last_seen": max(times, default=None),
                "hosts": sorted({dumps[p]["host"] for p in counts}),
                "growth": growth,
            }
    return rows


def fleet_rows(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The rows of a ``dumpminer.fleet/1`` document, in the oracle's form."""
    return {
        (row["cache"], row["template"]): {
            "objects": row["objects"],
            "per_dump": sorted((c["path"], c["objects"]) for c in row["per_dump"]),
            "share": [row["share"]["min"], row["share"]["median"], row["share"]["max"]],
            "first_seen": row["first_seen"],
            "last_seen": row["last_seen"],
            "hosts": row["hosts"],
            "growth": [(g["host"], g["per_hour"]) for g in row["growth"]],
        }
        for row in doc["templates"]
    }


def _counts(report: dict[str, Any]) -> dict[str, Any]:
    """What must be equal between a fleet's report of a dump and a separate mine's."""
    return {
        "cache": report["cache"],
        "objects_scanned": report["scan"]["objects_scanned"],
        "totals": report["totals"],
        "clusters": [(c["template"], c["objects"], c["occurrences"]) for c in report["clusters"]],
        "fragments": [(f["text"], f["objects"], f["occurrences"]) for f in report["fragments"]],
        "time": (report["dump"]["time"], report["dump"]["time_source"]),
    }


def check_fleet(
    doc: dict[str, Any],
    separate: dict[str, dict[str, Any]],
    hosts: dict[str, str],
    paths: list[str],
) -> None:
    """Every dump once; its report or its failure as a separate mine's; rows as the oracle's."""
    entries = {d["path"]: d for d in doc["dumps"]}
    assert sorted(d["path"] for d in doc["dumps"]) == sorted(paths)  # each dump exactly once
    assert len({d["digest"] for d in doc["dumps"]}) == len(paths)
    good = {}
    for path in paths:
        alone, entry = separate[path], entries[path]
        assert entry["exit_code"] == alone["exit_code"], (path, entry, alone["stderr"])
        if "doc" not in alone:
            assert entry["status"] == "failed" and entry["report"] is None
            assert alone["stderr"] == f"dumpminer: {entry['error']}"
            continue
        assert entry["status"] in ("mined", "reused")
        mined = json.loads(Path(entry["report"]).read_text())
        assert mined["schema"] == alone["doc"]["schema"]
        ours = [_counts(r) for r in _reports(mined)]
        assert ours == [_counts(r) for r in _reports(alone["doc"])], path
        assert entry["host"] == hosts[path]
        good[path] = {"doc": alone["doc"], "host": hosts[path],
                      "time": _reports(alone["doc"])[0]["dump"]["time"]}  # fmt: skip
    assert doc["summary"]["failed"] == len(paths) - len(good)
    assert fleet_rows(doc) == oracle_rows(good)


# --------------------------------------------------------------------------
# A real scheduler and two workers
# --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class DaskCluster:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, stopped by :meth:`stop`."""

    def __init__(self, workers: int) -> None:
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.logs: list[Path] = []
        self.scheduler = self._start("dask_scheduler", "--host", "127.0.0.1", "--port",
                                     str(self.port), "--no-dashboard")  # fmt: skip
        self.workers = [self.start_worker(f"w{i}") for i in range(workers)]
        from distributed import Client

        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=120)

    def _start(self, module: str, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", f"distributed.cli.{module}", *args],
            cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        # No nanny: a worker killed stays dead, and the scheduler must move its tasks.
        return self._start("dask_worker", self.address, "--nthreads", "1", "--host", "127.0.0.1",
                           "--no-dashboard", "--no-nanny", "--name", name)  # fmt: skip

    def stop(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                process.terminate()
        for process in [*self.workers, self.scheduler]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def cluster() -> Iterator[DaskCluster]:
    started = DaskCluster(2)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def external_run(
    fleet_paths: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The whole fleet mined once on a scheduler and two workers started here."""
    started = DaskCluster(2)
    try:
        out = tmp_path_factory.mktemp("fleet-out")
        report = out.parent / (out.name + "-fleet.json")
        done = _cli(*_fleet_args(out, *fleet_paths["args"]), "--scheduler", started.address,
                    "--format", "json", "-o", str(report))  # fmt: skip
    finally:
        started.stop()
    return {
        "done": done,
        "out": out,
        "doc": json.loads(report.read_text()) if report.exists() else None,
    }


def test_external_cluster_equals_separate_mines(
    fleet_paths: dict[str, Any],
    external_run: dict[str, Any],
    separate: dict[str, dict[str, Any]],
    hosts: dict[str, str],
) -> None:
    done = external_run["done"]
    assert done.returncode == 14, done.stderr  # written, with two dumps failed
    doc = external_run["doc"]
    assert doc["schema"] == "dumpminer.fleet/1"
    check_fleet(doc, separate, hosts, fleet_paths["dumps"])
    assert all(d["status"] in ("mined", "failed") for d in doc["dumps"])
    # The junk file is listed with mine's error and exit code 4; so is the dump cut short.
    junk = next(d for d in doc["dumps"] if d["path"] == fleet_paths["junk"])
    assert junk["exit_code"] == 4 and "not a vmcore" in junk["error"]
    # Both workers took part.
    workers = {w for f in external_run["out"].glob("*.json")
               for w in json.loads(f.read_text())["fleet"]["workers"]}  # fmt: skip
    assert len(workers) == 2, workers


def test_second_run_reuses_every_report(
    fleet_paths: dict[str, Any], external_run: dict[str, Any]
) -> None:
    """Current reports are read, not mined again; the failed dumps are tried again."""
    out = external_run["out"]
    before = {f: f.stat().st_mtime_ns for f in out.iterdir()}
    done = _cli(*_fleet_args(out, *fleet_paths["args"]), "--format", "json")
    assert done.returncode == 14, done.stderr
    doc = json.loads(done.stdout)
    assert doc["summary"]["mined"] == 0
    assert doc["summary"]["reused"] == len(fleet_paths["dumps"]) - 2
    assert {f: f.stat().st_mtime_ns for f in out.iterdir()} == before
    assert doc["templates"] == external_run["doc"]["templates"]


def test_find_lists_the_dumps_that_carry_a_template(
    fleet_paths: dict[str, Any], external_run: dict[str, Any], separate: dict[str, dict[str, Any]]
) -> None:
    out = external_run["out"]
    carriers = {}
    for path, alone in separate.items():
        for report in _reports(alone.get("doc", {"reports": []})):
            n = sum(c["objects"] for c in report["clusters"]
                    if c["template"] in ("t.point.<NUM>", "t.point.<HEX>"))  # fmt: skip
            if n:
                carriers[path] = n
    assert carriers
    for query in ("t.point.<NUM>", "t.point.00017"):
        done = _cli(*_fleet_args(out, *fleet_paths["args"]), "--format", "json", "--find", query)
        found = json.loads(done.stdout)["find"]
        assert found["query"] == query
        assert [r["template"] for r in found["templates"]] == ["t.point.<NUM>"]
        per_dump = {c["path"]: c["objects"] for c in found["templates"][0]["per_dump"]}
        assert per_dump == carriers


def test_formats(fleet_paths: dict[str, Any], external_run: dict[str, Any], tmp_path: Path) -> None:
    out = external_run["out"]
    args = _fleet_args(out, *fleet_paths["args"])
    table = _cli(*args, "--top", "5")
    assert table.returncode == 14
    assert "fleet: " in table.stdout and "t.point" in table.stdout
    assert "notes.bin" in table.stdout and "(exit 4)" in table.stdout
    csv_text = _cli(*args, "--format", "csv").stdout.splitlines()
    assert csv_text[0].startswith("cache,template,dumps,objects,share_min")
    assert len(csv_text) == 1 + len(external_run["doc"]["templates"])
    markdown = _cli(*args, "--format", "markdown", "--top", "5").stdout
    assert markdown.startswith("# dumpminer fleet") and "## Failed" in markdown
    page = tmp_path / "fleet.html"
    assert _cli(*args, "--format", "html", "-o", str(page)).returncode == 14
    shot = tmp_path / "fleet.png"
    result = load_in_chromium(page, tmp_path, shot)
    assert result["urls"] <= {page.as_uri()}, result["urls"]  # self-contained
    assert not [c for c in result["console"] if "Content Security Policy" in c]
    assert result["dom"].count('<tr class="row">') == min(
        100, len(external_run["doc"]["templates"])
    )
    assert result["dom"].count("<rect ") > 0
    assert shot.stat().st_size > 10_000


# --------------------------------------------------------------------------
# Failures of the machinery: a worker killed, the client interrupted
# --------------------------------------------------------------------------


def _wait_for_reports(out: Path, process: subprocess.Popen[str], count: int) -> None:
    deadline = time.monotonic() + 300
    while len(list(out.glob("*.json"))) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no report came"
        time.sleep(0.05)


def test_worker_killed_mid_run(
    cluster: DaskCluster,
    fleet_paths: dict[str, Any],
    separate: dict[str, dict[str, Any]],
    hosts: dict[str, str],
    tmp_path: Path,
) -> None:
    out, report = tmp_path / "out", tmp_path / "fleet.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "dumpminer", *_fleet_args(out, *fleet_paths["seeds_args"]),
         "--scheduler", cluster.address, "--format", "json", "-o", str(report)],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_reports(out, process, 1)
    cluster.workers[0].kill()  # mid-run: one report written, the others to come
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 14, stderr
    check_fleet(json.loads(report.read_text()), separate, hosts, fleet_paths["seeds_dumps"])
    assert len(list(out.glob("*.json"))) == len(fleet_paths["seeds_dumps"]) - 2


# --------------------------------------------------------------------------
# The embedded cluster
# --------------------------------------------------------------------------


def test_embedded_cluster_default_caches(
    fleet_paths: dict[str, Any], hosts: dict[str, str], tmp_path: Path
) -> None:
    """No --scheduler: a local cluster; no --cache: each dump's largest caches, as mine's."""
    folder = fleet_paths["seed_folder"]
    paths = sorted(str(p) for p in Path(folder).iterdir() if p.suffix == ".vmcore")
    alone = _separate_all([*paths, fleet_paths["junk"]], tmp_path / "alone", None)
    out, report = tmp_path / "out", tmp_path / "fleet.json"
    done = _cli(*_fleet_args(out, folder, fleet_paths["junk"], cache=None), "--format", "json",
                "-o", str(report))  # fmt: skip
    assert done.returncode == 14, done.stderr
    doc = json.loads(report.read_text())
    check_fleet(doc, alone, hosts, [*paths, fleet_paths["junk"]])
    assert all(len(d["caches"]) == 3 for d in doc["dumps"] if d["status"] == "mined")


def test_interrupted_client_resumes(fleet_paths: dict[str, Any], tmp_path: Path) -> None:
    """
    Ctrl-C at a terminal (SIGINT to the whole process group, workers too): one
    line and exit 130, reports written stay; the next run mines only what is left.
    """
    out = tmp_path / "out"
    args = _fleet_args(out, *fleet_paths["listed_args"])
    process = subprocess.Popen(
        [sys.executable, "-m", "dumpminer", *args], cwd=REPO, env=_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
        start_new_session=True,
    )  # fmt: skip
    _wait_for_reports(out, process, 2)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr == "dumpminer: interrupted\n"  # no worker's traceback
    kept = {f.name: f.stat().st_mtime_ns for f in out.glob("*.json")}
    assert 2 <= len(kept) < len(fleet_paths["listed_dumps"]) - 1
    assert not list(out.glob(".dumpminer-*"))  # no temporary file left behind
    done = _cli(*args, "--format", "json")
    assert done.returncode == 14, done.stderr
    doc = json.loads(done.stdout)
    assert sorted(d["path"] for d in doc["dumps"]) == sorted(fleet_paths["listed_dumps"])
    reused = {Path(d["report"]).name for d in doc["dumps"] if d["status"] == "reused"}
    mined = {Path(d["report"]).name for d in doc["dumps"] if d["status"] == "mined"}
    assert reused == set(kept) and not reused & mined
    assert len(reused) + len(mined) == len(fleet_paths["listed_dumps"]) - 1
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept


def test_not_a_single_dump(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _cli("fleet", str(empty), "--out", str(tmp_path / "out"))
    assert done.returncode == 3 and done.stderr.startswith("dumpminer: no dumps found in ")


def test_mine_does_not_import_dask() -> None:
    code = (
        "import sys, dumpminer.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dask', 'distributed') or m.startswith('dumpminer.fleet')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=_env(), check=True)  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_listing_and_folders_found_by_header(tmp_path: Path) -> None:
    """A folder's dumps are found by their first bytes, not their names."""
    shutil.copy(Path(__file__), tmp_path / "vmcore")  # named like a dump, is not one
    elf = tmp_path / "sub" / "case-1234.bin"
    elf.parent.mkdir()
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x04\x00" + b"\0" * 100)
    code = ("import sys, json; from dumpminer.fleet.discover import find_dumps; "
            "print(json.dumps(find_dumps(sys.argv[1:])))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, cwd=REPO, env=_env(), check=True)  # fmt: skip
    assert json.loads(done.stdout) == [str(elf)]
