"""
dumpminer diff on the real pair sample (issue 14): two boots of one kernel
and module with different planted counts (sample_dumps/build.py, "pair").

The expected growth comes from the pair manifest (what the module was told
to plant) and the time from drgn reading the kernel clock directly; nothing
here asks dumpminer what to expect.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO_ROOT, selected_series
from oracle import open_prog

from sample_dumps.build import build_pair

PLANTED_CACHES = ("kmalloc-32", "kmalloc-64", "kmalloc-128")
SLOT_PATTERNS = {"<NUM>": "[0-9]+", "<HEX>": "[0-9A-F]+", "<*>": "[A-Za-z]+"}


@pytest.fixture(scope="session", params=selected_series(), ids=lambda s: f"linux-{s}")
def pair_manifest(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The pair manifest of one series (both samples built on first use)."""
    manifest: dict[str, Any] = json.loads(Path(build_pair("pair", request.param)).read_text())
    return manifest


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command line, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "dumpminer.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO_ROOT,
    )


def dump_path(side: dict[str, Any], fmt: str) -> str:
    return str(next(d["path"] for d in side["dumps"] if d["format"] == fmt))


@cache
def _diff_json(old: str, new: str, vmlinux: str, cache_name: str, *extra: str) -> Any:
    done = cli("diff", old, new, "--vmlinux", vmlinux, "--cache", cache_name, "--quiet",
               "--format", "json", "--noise-floor", "0", *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def template_regex(template: str) -> re.Pattern[str]:
    """A manifest template (``t.point.<NUM>``) as a regular expression for its strings."""
    parts = re.split(r"(<NUM>|<HEX>|<\*>)", template)
    return re.compile("".join(SLOT_PATTERNS.get(p, re.escape(p)) for p in parts))


def planted_changes(growth: dict[str, Any]) -> dict[str, int]:
    """Template or string -> planted delta, strings covered by a template left out."""
    templates = {t: g["delta"] for t, g in growth["templates"].items()}
    regexes = [template_regex(t) for t in templates]
    strings = {
        s: g["delta"]
        for s, g in growth["strings"].items()
        if not any(r.fullmatch(s) for r in regexes)
    }
    return {**templates, **strings}


@pytest.mark.parametrize("fmt", ["kdump", "makedumpfile"])
@pytest.mark.parametrize("cache_name", PLANTED_CACHES)
def test_diff_reports_exactly_the_planted_growth(
    pair_manifest: dict[str, Any], cache_name: str, fmt: str
) -> None:
    old, new = dump_path(pair_manifest["old"], fmt), dump_path(pair_manifest["new"], fmt)
    doc = _diff_json(old, new, pair_manifest["vmlinux"], cache_name)
    assert doc["schema"] == "dumpminer.diff/1"
    (entry,) = doc["caches"]
    assert entry["cache"] == cache_name
    assert entry["old"]["pointers_masked"] and entry["new"]["pointers_masked"]
    clusters = {c["template"]: c for c in entry["clusters"]}
    expected = planted_changes(pair_manifest["growth"][cache_name])
    assert expected, "the pair plants something in every planted cache"
    for key, delta in expected.items():
        got = clusters.get(key)
        assert got is not None, f"{key!r} missing from the diff of {cache_name}"
        assert got["delta"] == delta, (key, got)
        status = {True: "new", False: "grown"} if delta > 0 else {True: "gone", False: "shrunk"}
        assert got["status"] == status[got["old_objects" if delta > 0 else "new_objects"] == 0]
    # Nothing else moves by more than the documented noise floor.
    from dumpminer.diff.compare import DEFAULT_NOISE_FLOOR

    others = [c for c in entry["clusters"] if c["template"] not in expected]
    assert max((abs(c["delta"]) for c in others), default=0) <= DEFAULT_NOISE_FLOOR, [
        (c["template"], c["delta"]) for c in others if abs(c["delta"]) > DEFAULT_NOISE_FLOOR
    ]
    # The table shows the planted changes, and only them, above the floor.
    table = cli("diff", old, new, "--vmlinux", pair_manifest["vmlinux"], "--cache", cache_name,
                "--quiet")  # fmt: skip
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    # The rows follow the table's header line (the lines above name the sides).
    rows = [line.split(None, 6) for line in lines[lines.index(
        next(x for x in lines if x.startswith("status "))):]]  # fmt: skip
    shown = {r[6] for r in rows if len(r) == 7 and r[0] in ("new", "grown", "shrunk", "gone")}
    assert shown == set(expected)


def test_pointer_bytes_would_be_noise_without_blanking(pair_manifest: dict[str, Any]) -> None:
    """The blanking is what keeps the background still: without it, KASLR shows as growth."""
    old, new = dump_path(pair_manifest["old"], "elf"), dump_path(pair_manifest["new"], "elf")
    raw = _diff_json(old, new, pair_manifest["vmlinux"], "kmalloc-64", "--keep-pointers")
    entry = raw["caches"][0]
    assert not entry["new"]["pointers_masked"]
    expected = planted_changes(pair_manifest["growth"]["kmalloc-64"])
    noisy = [c for c in entry["clusters"] if c["template"] not in expected and c["delta"]]
    assert len(noisy) > 20


def test_growth_per_hour_uses_the_kernel_clock(pair_manifest: dict[str, Any]) -> None:
    old, new = dump_path(pair_manifest["old"], "elf"), dump_path(pair_manifest["new"], "elf")
    vmlinux = pair_manifest["vmlinux"]
    doc = _diff_json(old, new, vmlinux, "kmalloc-32")
    clocks = []
    for path in (old, new):
        prog = open_prog(path, vmlinux)
        clocks.append(prog["tk_core"].timekeeper.xtime_sec.value_())
    assert doc["old"]["time"] == clocks[0] and doc["new"]["time"] == clocks[1]
    assert doc["old"]["time_source"] == doc["new"]["time_source"] == "tk_core.timekeeper.xtime_sec"
    # Beside the seconds, the date for people: UTC in ISO 8601, in JSON and the table.
    iso = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(c)) for c in clocks]
    assert [doc["old"]["time_utc"], doc["new"]["time_utc"]] == iso
    table = cli("diff", old, new, "--vmlinux", vmlinux, "--cache", "kmalloc-32", "--quiet")
    assert f"time {clocks[0]} ({iso[0]}), from tk_core" in table.stdout
    hours = (clocks[1] - clocks[0]) / 3600
    assert hours > 0 and doc["hours"] == round(hours, 6)
    counters = next(c for c in doc["caches"][0]["clusters"] if c["template"] == "t.point.<NUM>")
    assert counters["per_hour"] == round(counters["delta"] / hours, 3)
    # info reads the same clock when given the vmlinux, and says so.
    done = cli("info", new, "--vmlinux", vmlinux, "--format", "json")
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert facts["crash_time"] is None
    assert (facts["time"], facts["time_source"]) == (clocks[1], "tk_core.timekeeper.xtime_sec")
    assert facts["time_utc"] == iso[1]
    shown = cli("info", new, "--vmlinux", vmlinux).stdout
    assert re.search(rf"^time +{clocks[1]} \({iso[1]}\)$", shown, re.M), shown
    plain = json.loads(cli("info", new, "--format", "json").stdout)
    assert plain["time"] is None and plain["time_source"] is None


def test_json_reports_diff_like_the_dumps(pair_manifest: dict[str, Any], tmp_path: Path) -> None:
    """Each side may be a report written by mine: the result is the same."""
    vmlinux = pair_manifest["vmlinux"]
    paths = []
    for side in ("old", "new"):
        out = tmp_path / f"{side}.json"
        done = cli("mine", dump_path(pair_manifest[side], "kdump"), "--vmlinux", vmlinux,
                   "--cache", "kmalloc-64", "--mask-pointers", "--format", "json", "--quiet",
                   "-o", str(out))  # fmt: skip
        assert done.returncode == 0, done.stderr
        paths.append(str(out))
    from_reports = cli("diff", *paths, "--format", "json", "--noise-floor", "0")
    assert from_reports.returncode == 0, from_reports.stderr
    doc = json.loads(from_reports.stdout)
    assert doc["old"]["kind"] == doc["new"]["kind"] == "report"
    mined = _diff_json(
        dump_path(pair_manifest["old"], "kdump"),
        dump_path(pair_manifest["new"], "kdump"),
        vmlinux,
        "kmalloc-64",
    )

    def changes(d: dict[str, Any]) -> list[tuple[str, str, int]]:
        return [(c["template"], c["status"], c["delta"]) for c in d["caches"][0]["clusters"]]

    assert changes(doc) == changes(mined)
    assert doc["hours"] == mined["hours"]
    # A report mined with other options is refused, not compared.
    other = tmp_path / "other.json"
    done = cli("mine", dump_path(pair_manifest["new"], "kdump"), "--vmlinux", vmlinux,
               "--cache", "kmalloc-64", "--min-length", "5", "--format", "json", "--quiet",
               "-o", str(other))  # fmt: skip
    assert done.returncode == 0, done.stderr
    refused = cli("diff", paths[0], str(other))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "--min-length" in refused.stderr


def test_diff_formats(pair_manifest: dict[str, Any]) -> None:
    old, new = dump_path(pair_manifest["old"], "elf"), dump_path(pair_manifest["new"], "elf")
    base = ["diff", old, new, "--vmlinux", pair_manifest["vmlinux"], "--cache", "kmalloc-128",
            "--quiet"]  # fmt: skip
    csv_out = cli(*base, "--format", "csv")
    assert csv_out.returncode == 0, csv_out.stderr
    lines = csv_out.stdout.splitlines()
    assert lines[0].startswith("cache,status,template,old_objects,new_objects,delta")
    assert lines[1:] == [
        line for line in lines[1:] if "/opt/agent/state/<*>.json" in line and ",shrunk," in line
    ]
    assert len(lines) == 2
    md = cli(*base, "--format", "markdown")
    assert md.returncode == 0, md.stderr
    assert "| shrunk | /opt/agent/state/\\<\\*>.json | 4000 | 2500 | -1500 |" in md.stdout


def test_diff_refuses_bad_sides(tmp_path: Path) -> None:
    missing = cli("diff", str(tmp_path / "nope"), str(tmp_path / "nope2"))
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something/1"}')
    wrong = cli("diff", str(bad), str(bad))
    assert wrong.returncode == 3 and "not a dumpminer report" in wrong.stderr
    assert wrong.stderr.count("\n") == 1


def _seed_kdump(manifest: dict[str, Any]) -> str:
    return dump_path(manifest, "kdump")


@pytest.mark.parametrize("cache_name", ["kmalloc-32", "kmalloc-96"])
def test_an_incomplete_report_against_its_own_dump_changes_nothing(
    sample_manifest: dict[str, Any], tmp_path: Path, cache_name: str
) -> None:
    """
    A report trimmed by --top lists only part of what the dump holds: absence
    from it is not zero, so the diff against the same dump compares what both
    sides list, finds no change, and says so in every format.
    """
    vmcore, vmlinux = _seed_kdump(sample_manifest), sample_manifest["vmlinux"]
    report = tmp_path / "report.json"
    done = cli("mine", vmcore, "--vmlinux", vmlinux, "--cache", cache_name, "--top", "1",
               "--format", "json", "--quiet", "-o", str(report))  # fmt: skip
    assert done.returncode == 0, done.stderr
    for sides in ((str(report), vmcore), (vmcore, str(report))):
        outs = {}
        for fmt in ("json", "table", "csv", "markdown", "html"):
            run = cli("diff", *sides, "--vmlinux", vmlinux, "--quiet", "--format", fmt)
            assert run.returncode == 0, run.stderr
            outs[fmt] = run.stdout
        doc = json.loads(outs["json"])
        (cache_diff,) = doc["caches"]
        assert cache_diff["compared"] == "common" and cache_diff["limits"]
        assert cache_diff["summary"] == {"new": 0, "grown": 0, "shrunk": 0, "gone": 0}
        assert not [c for c in cache_diff["clusters"] if c["above_floor"]]
        assert "no cluster changed by more than the noise floor" in outs["table"]
        for fmt in ("table", "markdown", "html"):
            assert "only templates listed on both sides are compared" in outs[fmt], fmt
        rows = outs["csv"].splitlines()
        assert rows[1].startswith(f"{cache_name},limited,") and len(rows) == 2


def test_a_sampled_report_is_refused(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    """
    A --sample report's templates are clustered from the fragments it drew and
    its counts are estimates: compared with the whole dump, templates formed
    differently would show as new or gone. One line, exit 2.
    """
    vmcore, vmlinux = _seed_kdump(sample_manifest), sample_manifest["vmlinux"]
    report = tmp_path / "report.json"
    done = cli("mine", vmcore, "--vmlinux", vmlinux, "--cache", "kmalloc-32", "--sample", "0.3",
               "--format", "json", "--quiet", "-o", str(report))  # fmt: skip
    assert done.returncode == 0, done.stderr
    for sides in ((str(report), vmcore), (vmcore, str(report))):
        refused = cli("diff", *sides, "--vmlinux", vmlinux, "--quiet")
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.count("\n") == 1 and "sampled report" in refused.stderr


def test_a_partial_report_is_refused(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    """A report whose walk was cut short cannot say what is gone: one line, exit 10."""
    vmcore, vmlinux = _seed_kdump(sample_manifest), sample_manifest["vmlinux"]
    report = tmp_path / "report.json"
    done = cli("mine", vmcore, "--vmlinux", vmlinux, "--cache", "kmalloc-64",
               "--format", "json", "--quiet", "-o", str(report))  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(report.read_text())
    doc["partial"] = True  # as an interrupted mine writes it
    doc["progress"] = {"slabs_walked": 3, "slabs_found": doc["cache"]["slabs"]}
    report.write_text(json.dumps(doc))
    refused = cli("diff", str(report), vmcore, "--vmlinux", vmlinux, "--quiet")
    assert refused.returncode == 10, refused.stderr
    assert refused.stderr.count("\n") == 1 and "partial report" in refused.stderr
