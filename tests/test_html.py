"""
The HTML report in a real browser (issue 14): headless Chromium loads the
page written by ``mine --format html`` and ``diff --format html``; the test
reads the rendered DOM, Chromium's console log and its network log.

Needs Debian's ``chromium`` package; without it the tests fail (never skip).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from conftest import REPO_ROOT
from test_diff import pair_manifest  # noqa: F401  (the fixture)

HOSTILE = "<script>alert(1)</script>\"'&\x01\x1b[31m"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000",
]  # fmt: skip


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dumpminer.cli", *args],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO_ROOT,
    )  # fmt: skip


def load_in_chromium(page: Path, work: Path, screenshot: Path | None = None) -> dict[str, Any]:
    """
    Load *page* in headless Chromium: the rendered DOM, the console messages
    and every URL the network log saw.
    """
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is needed (apt-get install chromium)"
    net_log = work / "net.json"
    run = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={work / 'profile'}",
           f"--log-net-log={net_log}"]  # fmt: skip
    done = subprocess.run(
        [*run, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    if screenshot is not None:
        shot = subprocess.run(
            [*run, "--hide-scrollbars", "--window-size=1200,1500",
             f"--screenshot={screenshot}", page.as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert shot.returncode == 0, shot.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    # Requests the page made: Chromium's own (updates, time, accounts) have
    # no initiator ("not an origin"); the page's carry its origin ("null" for file:).
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = set()
    for event in log.get("events", []):
        params = event.get("params") or {}
        if (
            event["type"] == start_job
            and params.get("initiator", "not an origin") != "not an origin"
        ):
            urls.add(str(params.get("url")))
    return {"dom": done.stdout, "console": console, "urls": urls}


class _Collector(HTMLParser):
    """Elements by tag and class, and the text inside each class."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, str]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class") or ""
        self.tags.append((tag, cls))
        self._open.append(cls)

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for cls in self._open:
            if cls:
                self.texts.setdefault(cls, []).append(data)


def parse(dom: str) -> _Collector:
    collector = _Collector()
    collector.feed(dom)
    return collector


def check_page(result: dict[str, Any]) -> _Collector:
    assert result["console"] == [], result["console"]
    remote = {u for u in result["urls"] if not u.startswith(("file:", "data:"))}
    assert remote == set(), remote
    page = parse(result["dom"])
    assert ("svg", "chart") in page.tags
    assert sum(1 for tag, cls in page.tags if tag == "rect" and "bar" in cls) >= 1
    assert not any(tag == "script" for tag, _ in page.tags)
    return page


def test_mine_html_in_chromium(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    entry = next(d for d in sample_manifest["dumps"] if d["format"] == "kdump")
    out = tmp_path / "report.html"
    done = cli("mine", entry["path"], "--vmlinux", sample_manifest["vmlinux"], "--cache",
               "kmalloc-32", "--format", "html", "--quiet", "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    shot = tmp_path / "html-report.png"
    result = load_in_chromium(out, tmp_path, shot)
    page = check_page(result)
    assert shot.read_bytes().startswith(b"\x89PNG")
    # docs/html-report.png (in the README) is this screenshot of the 6.1 seed sample.
    if os.environ.get("DUMPMINER_UPDATE_SCREENSHOT") and sample_manifest["series"] == "6.1":
        shutil.copyfile(shot, REPO_ROOT / "docs" / "html-report.png")
    templates = "".join(page.texts.get("template", []))
    # The leak's templates are the top clusters; the rule strings lead the table.
    for text in ("t.point.<NUM>", "sbin/*agt/", "@Vv*/"):
        assert text in templates
    # The first example of the top cluster is dumped with the fragment highlighted.
    assert "<mark>" in result["dom"] and "pre" in {tag for tag, _ in page.tags}
    assert "rd -64 0x" in result["dom"] and "kmem 0x" in result["dom"]


def test_hostile_template_is_text(tmp_path: Path) -> None:
    """A template with markup, quotes and control bytes (JSON reports are input too)."""
    reports = []
    for side, objects in (("old", 1), ("new", 500)):
        doc = {
            "schema": "dumpminer.report/1",
            "dump": {"path": f"/tmp/{HOSTILE}", "time": 1000 if side == "old" else 4600,
                     "time_source": "header"},
            "cache": {"name": f"kmalloc-{HOSTILE}", "caches": ["kmalloc-32"],
                      "object_size": 32, "allocated": objects},
            "scan": {"objects_scanned": objects, "min_length": 3, "context_before": 0,
                     "context_after": 0, "pointers_masked": True},
            "clusters": [{"template": HOSTILE, "objects": objects, "typical_offset": 16,
                          "examples": ["0xffff888000001000"]}],
            "fragments": [],
        }  # fmt: skip
        path = tmp_path / f"{side}.json"
        path.write_text(json.dumps(doc))
        reports.append(str(path))
    out = tmp_path / "diff.html"
    done = cli("diff", *reports, "--format", "html", "-o", str(out))
    assert done.returncode == 0, done.stderr
    result = load_in_chromium(out, tmp_path)
    page = check_page(result)
    shown = "".join(page.texts.get("template", []))
    # Shown as text: markup and quotes as typed, control bytes as \xNN.
    assert "<script>alert(1)</script>\"'&\\x01\\x1b[31m" in shown
    assert "\x01" not in result["dom"] and "\x1b" not in result["dom"]
    table = cli("diff", *reports)
    assert "+499" in table.stdout and "+499.0" in table.stdout  # one hour apart


def test_diff_html_of_the_pair(pair_manifest: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    manifest = pair_manifest
    old = next(d["path"] for d in manifest["old"]["dumps"] if d["format"] == "elf")
    new = next(d["path"] for d in manifest["new"]["dumps"] if d["format"] == "elf")
    out = tmp_path / "diff.html"
    done = cli("diff", old, new, "--vmlinux", manifest["vmlinux"], "--cache", "kmalloc-32",
               "--format", "html", "--quiet", "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = load_in_chromium(out, tmp_path)
    page = check_page(result)
    templates = "".join(page.texts.get("template", []))
    assert "t.point.<NUM>" in templates and "sbin/*agt/" in templates
    assert "<mark>" in result["dom"]


def test_string_less_leak_on_the_page_in_chromium(
    sample_manifest: dict[str, Any], tmp_path: Path
) -> None:
    """
    kmalloc-96's leak holds no text: the page a person opens names it (the
    LEADING line, before the facts) and its target, agent_table, as the table does.
    """
    entry = next(d for d in sample_manifest["dumps"] if d["format"] == "kdump")
    out = tmp_path / "report.html"
    done = cli("mine", entry["path"], "--vmlinux", sample_manifest["vmlinux"], "--cache",
               "kmalloc-96", "--format", "html", "--quiet", "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = cli("mine", entry["path"], "--vmlinux", sample_manifest["vmlinux"], "--cache",
                "kmalloc-96", "--quiet").stdout  # fmt: skip
    result = load_in_chromium(out, tmp_path, tmp_path / "kmalloc-96.png")
    page = check_page(result)
    shown = " ".join(" ".join(texts) for texts in page.texts.values())
    points = "".join("".join(t) for cls, t in page.texts.items() if "points-to" in cls.split())
    assert "leaky_agent:agent_table" in points
    if "LEADING:" in table:
        leading = "".join(page.texts.get("note leading", []))
        assert "LEADING: string-less shape group S1, 3000 objects" in leading
        assert "&leaky_agent:agent_table" in leading and "leaky_agent:agent_table" in shown
        # The chart leads with it too.
        assert "S1 string-less &amp;leaky_agent:agent_table" in result["dom"]
