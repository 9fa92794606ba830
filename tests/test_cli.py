"""
The command line as a user meets it (issue 13), on the real sample dumps.

Where ``-o`` writes (devices, FIFOs, symbolic links), when a progress bar is
drawn, every report format and sampling, workers and globs through the CLI,
the hints for common slips, Ctrl-C during start-up, and the README's API
snippet run as written. Reports are checked against the JSON report, whose
counts tests/test_mine.py checks against the oracle, and cache facts against
drgn's helpers directly.
"""

from __future__ import annotations

import csv
import fcntl
import fnmatch
import io
import json
import os
import pty
import re
import select
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import drgn
import pytest
from conftest import default_sigint, unprivileged
from drgn.helpers.linux.slab import for_each_slab_cache, slab_cache_usage
from oracle import allocated_count, count_records

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 180
CACHE = "kmalloc-32"


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **(extra or {})}


def cli(*args: str, prefix: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """``python -m dumpminer ARGS``, the console script's code path, as a user runs it."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "dumpminer", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=_env(),
        timeout=TIMEOUT,
        **kwargs,
    )


def one_line(stderr: str) -> str:
    """A failure or warning is one line on stderr, no traceback."""
    assert stderr.startswith("dumpminer: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    return stderr


def kdump(manifest: dict[str, Any]) -> str:
    return str(next(d["path"] for d in manifest["dumps"] if d["format"] == "kdump"))


def mine_args(manifest: dict[str, Any], *extra: str) -> list[str]:
    return ["mine", kdump(manifest), "--vmlinux", manifest["vmlinux"], *extra]


@cache
def _json(vmcore: str, vmlinux: str, *extra: str) -> dict[str, Any]:
    done = cli("mine", vmcore, "--vmlinux", vmlinux, "--format", "json", *extra)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def json_report(manifest: dict[str, Any], *extra: str) -> dict[str, Any]:
    """The JSON report of CACHE (or of what *extra* asks), run once per arguments."""
    if "--cache" not in extra:
        extra = ("--cache", CACHE, *extra)
    return _json(kdump(manifest), manifest["vmlinux"], *extra)


def without_time(report: dict[str, Any]) -> dict[str, Any]:
    return {**report, "scan": {k: v for k, v in report["scan"].items() if k != "seconds"}}


# --------------------------------------------------------------------------
# -o: regular files atomically, devices and FIFOs straight through, links followed
# --------------------------------------------------------------------------


def test_output_to_a_character_device_stays_a_device(
    sample_manifest: dict[str, Any], tmp_path: Path
) -> None:
    """A device node made here, not /dev's: a regression must not replace /dev/full."""
    null, full = tmp_path / "null", tmp_path / "full"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    done = cli(*mine_args(sample_manifest, "--cache", CACHE, "-o", str(null)))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    done = cli(*mine_args(sample_manifest, "--cache", CACHE, "-o", str(full)))
    assert done.returncode == 8
    assert "No space left on device" in one_line(done.stderr)
    assert all(stat.S_ISCHR(p.lstat().st_mode) for p in (null, full))
    assert sorted(os.listdir(tmp_path)) == ["full", "null"]  # no temporary file left
    done = cli(*mine_args(sample_manifest, "--cache", CACHE, "-o", os.devnull))
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(os.lstat(os.devnull).st_mode)


def test_output_to_a_fifo_reaches_its_reader(
    sample_manifest: dict[str, Any], tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    done = cli(*mine_args(sample_manifest, "--cache", CACHE, "--format", "json", "-o", str(fifo)))
    reader.join(timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    assert without_time(json.loads(received[0])) == without_time(json_report(sample_manifest))
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert os.listdir(tmp_path) == ["fifo"]


def test_output_through_a_symlink_writes_its_target(
    sample_manifest: dict[str, Any], tmp_path: Path
) -> None:
    target, link = tmp_path / "reports" / "r.json", tmp_path / "latest.json"
    target.parent.mkdir()
    target.write_text("the previous report\n")
    target.chmod(0o640)
    link.symlink_to(target)
    done = cli(*mine_args(sample_manifest, "--cache", CACHE, "--format", "json", "-o", str(link)))
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["cache"]["name"] == CACHE
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the replaced file's mode is kept
    assert sorted(os.listdir(target.parent)) == ["r.json"]
    # A dangling link: its target is created, as the shell's > would.
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "new.json")
    done = cli(*mine_args(sample_manifest, "--cache", CACHE, "-o", str(dangling)))
    assert done.returncode == 0, done.stderr
    assert dangling.is_symlink() and (tmp_path / "new.json").read_text().startswith("dump ")


# --------------------------------------------------------------------------
# As a user whom file modes apply to
# --------------------------------------------------------------------------


def test_unreadable_vmcore_as_a_user(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    vmcore = tmp_path / "vmcore"
    vmcore.write_bytes(Path(kdump(sample_manifest)).read_bytes()[: 1 << 16])
    vmcore.chmod(0)
    for command in (["info", str(vmcore)], ["mine", str(vmcore), "--cache", CACHE]):
        done = cli(*command, prefix=unprivileged())
        assert done.returncode == 3, done.stderr
        assert "Permission denied" in one_line(done.stderr)


def test_read_only_directory_as_a_user(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    """No report in a read-only directory (8), but its device nodes and FIFOs take one."""
    ro = tmp_path / "ro"
    ro.mkdir()
    os.mknod(ro / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    ro.chmod(0o555)
    user = unprivileged()
    done = cli(*mine_args(sample_manifest, "--cache", CACHE, "-o", str(ro / "r.json")), prefix=user)
    assert done.returncode == 8
    assert "not a writable directory" in one_line(done.stderr)
    # The report would have been mined for nothing: refused before the walk.
    assert done.stdout == ""
    for out in (str(ro / "null"), os.devnull):
        done = cli(*mine_args(sample_manifest, "--cache", CACHE, "-o", out), prefix=user)
        assert done.returncode == 0, (out, done.stderr)
    assert os.listdir(ro) == ["null"]


# --------------------------------------------------------------------------
# The API: render(), the README snippet
# --------------------------------------------------------------------------


def test_render_of_a_report_mined_from_a_program(
    sample_manifest: dict[str, Any], open_prog: Any
) -> None:
    import dumpminer

    prog = open_prog(kdump(sample_manifest), sample_manifest["vmlinux"])
    report = dumpminer.mine(prog, CACHE)
    release = prog["UTS_RELEASE"].string_().decode()
    for fmt in ("table", "markdown"):
        text = dumpminer.render(report, fmt)
        assert "None" not in text, text[:300]
        assert f"kernel {release}, from a drgn program" in text
    with pytest.raises(ValueError, match=r"unknown report format 'yaml': use one of table, json"):
        dumpminer.render(report, "yaml")


def _readme_blocks(lang: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_readme_api_snippet_runs_as_written(
    sample_manifest: dict[str, Any], tmp_path: Path
) -> None:
    """
    The README's Python snippet, run verbatim in a folder where the file
    names it uses point at the sample dump and its vmlinux.
    """
    (snippet,) = [b for b in _readme_blocks("python") if "open_dump" in b]
    vmcore_name, vmlinux_name = re.findall(r'open_dump\("([^"]+)", "([^"]+)"\)', snippet)[0]
    (tmp_path / vmcore_name).symlink_to(kdump(sample_manifest))
    (tmp_path / vmlinux_name).symlink_to(sample_manifest["vmlinux"])
    done = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, cwd=tmp_path,
        env=_env(), timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first == f"dump {vmcore_name} (kdump, {sample_manifest['kernel_release']})"
    assert re.search(r"^1 +12000 .* tmp$", done.stdout, re.M), done.stdout
    # The drgn REPL line: the sample's QEMU kdump opened, drgn's helpers at hand.
    (repl,) = [
        line for b in _readme_blocks("sh") for line in b.splitlines() if "run_interactive" in line
    ]
    bin_dir = os.path.dirname(sys.executable)
    done = subprocess.run(
        ["bash", "-c", repl],
        input='print("usage", slab_cache_usage(find_slab_cache(prog, "kmalloc-32")))\n',
        capture_output=True, text=True, cwd=tmp_path, timeout=TIMEOUT,
        env=_env({"PATH": f"{bin_dir}:{os.environ['PATH']}"}),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage SlabCacheUsage(num_slabs=" in done.stdout, done.stdout


_INTERRUPT_WHILE_IMPORTING = """
import os, signal, sys
class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            open(os.environ["MARK"], "w").close()
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
from dumpminer.__main__ import run  # what the console script runs
run()
"""


def test_ctrl_c_during_start_up_is_quiet(tmp_path: Path) -> None:
    """SIGINT while the CLI's imports run (numpy's turn): one line, 130."""
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["dumpminer"] == "dumpminer.__main__:run"
    mark = tmp_path / "interrupted"
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_WHILE_IMPORTING, "info", "/no/such/file"],
        capture_output=True, text=True, env=_env({"MARK": str(mark)}), timeout=TIMEOUT,
        preexec_fn=default_sigint,
    )  # fmt: skip
    assert mark.exists()  # the signal did land during the imports
    assert done.returncode == 130
    assert done.stderr == "dumpminer: interrupted\n"


#: Modules a quiet ``mine`` of one small cache has no use for: other
#: commands' (diff, caches), the HTML report's, worker processes', the
#: progress bar's, and numpy.random (only the numpy reference of shape
#: grouping draws from it). Each costs start-up time when imported.
_NOT_FOR_A_QUIET_MINE = (
    "dumpminer.diff.compare",
    "dumpminer.slub.slabinfo",
    "dumpminer.report.html",
    "dumpminer.scan.workers",
    "multiprocessing",
    "tqdm",
    "numpy.random",
    "dumpminer.fleet",
    "distributed",
    "dask",
)

_IMPORTED_AFTER_MINE = """
import json, sys
from dumpminer.__main__ import main
unused = set(sys.argv.pop(1).split(","))
code = main()
print(json.dumps([code, sorted(unused & set(sys.modules))]))
"""


def test_quiet_mine_imports_only_what_it_uses(sample_manifest: dict[str, Any]) -> None:
    args = mine_args(sample_manifest, "--cache", CACHE, "-o", os.devnull, "--quiet")
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTED_AFTER_MINE, ",".join(_NOT_FOR_A_QUIET_MINE), *args],
        capture_output=True, text=True, cwd=REPO, env=_env(), timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    code, imported = json.loads(done.stdout)
    assert code == 0, done.stderr
    assert imported == []


# --------------------------------------------------------------------------
# Progress bars
# --------------------------------------------------------------------------


def test_progress_bar_only_on_a_terminal_or_when_asked(sample_manifest: dict[str, Any]) -> None:
    args = mine_args(sample_manifest, "--cache", CACHE, "-o", os.devnull)
    assert cli(*args).stderr == ""  # stderr is a pipe: no bar
    forced = cli(*args, "--progress")
    assert forced.returncode == 0 and "mining kmalloc-32" in forced.stderr
    master, slave = pty.openpty()
    # A terminal has a size; tqdm draws nothing in zero columns.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dumpminer", *args],
            stdout=subprocess.DEVNULL, stderr=slave, cwd=REPO, env=_env(),
        )  # fmt: skip
        os.close(slave)
        seen = b""
        # Read until the child is gone, but not forever: a hung child fails the test.
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([master], [], [], left)[0]:
                proc.kill()
                pytest.fail(f"mine on a terminal: no end within {TIMEOUT} s (a hang?); {seen!r}")
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer of the terminal is gone
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        os.close(master)
    assert b"mining kmalloc-32" in seen
    quiet = cli(*args, "--quiet", "--progress")
    assert quiet.returncode == 2 and "not allowed with" in one_line(quiet.stderr)


def test_caches_accepts_quiet(sample_manifest: dict[str, Any]) -> None:
    done = cli("caches", kdump(sample_manifest), "--vmlinux", sample_manifest["vmlinux"],
               "--quiet", "--top", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    # The header, the three largest caches and the summary: nothing else.
    header, *rows, summary = done.stdout.splitlines()
    assert header.split()[:4] == ["CACHE", "NAME", "OBJSIZE", "ALLOCATED"]
    assert len(rows) == 3 and summary.startswith("slab memory ")


# --------------------------------------------------------------------------
# CSV and Markdown through the CLI, against the JSON report
# --------------------------------------------------------------------------


def _csv_rows(text: str, kind: str = "cluster") -> list[dict[str, str]]:
    """The CSV rows of one kind: clusters, unless asked for shape groups or call sites."""
    return [row for row in csv.DictReader(io.StringIO(text)) if row["kind"] == kind]


def test_csv_through_the_cli(sample_manifest: dict[str, Any]) -> None:
    expected = json_report(sample_manifest)["clusters"]
    done = cli(*mine_args(sample_manifest, "--cache", CACHE, "--format", "csv"))
    assert done.returncode == 0, done.stderr
    rows = _csv_rows(done.stdout)
    assert len(rows) == len(expected)
    for row, cluster in zip(rows, expected, strict=True):
        raw = bytes.fromhex(row["template_hex"]).decode("ascii")
        assert raw == cluster["template"]
        safe = "'" + raw if raw[:1] in ("=", "+", "-", "@") else raw
        assert row["template"] == safe
        for key in ("objects", "occurrences", "in_context", "distinct_members"):
            assert int(row[key]) == cluster[key], key
        assert row["examples"].split() == cluster["examples"]
        assert row["objects_ci95_low"] == row["objects_ci95_high"] == ""
    by_raw = {bytes.fromhex(r["template_hex"]): r for r in rows}
    assert by_raw[b"@Vv*/"]["template"] == "'@Vv*/"
    # Templates with a space at an end are quoted, so no reader trims them.
    # The sample's such templates were pointer bytes (' <NUM>{'), which are
    # no longer text: one of its clusters is given one here.
    import dumpminer

    dump = dumpminer.open_dump(kdump(sample_manifest), sample_manifest["vmlinux"])
    report = dumpminer.mine(dump.prog, CACHE, dump=dump, workers=1, attribution=False)
    report.clusters[-1].template = b' say "hi" '
    text = dumpminer.render(report, "csv")
    edged = [r for r in _csv_rows(text) if r["template"] != r["template"].strip()]
    # Other clusters may have spaces at their ends too (5.10's kmalloc-32 has 'B  '):
    # each comes back as it was, and the planted one is among them.
    assert ' say "hi" ' in [r["template"] for r in edged]
    assert all(bytes.fromhex(r["template_hex"]).decode("latin-1") == r["template"] for r in edged
               if r["kind"] == "cluster" and not r["template"].startswith("'"))
    assert '" say ""hi"" "' in text


def test_markdown_through_the_cli(sample_manifest: dict[str, Any]) -> None:
    expected = json_report(sample_manifest)["clusters"][:20]
    done = cli(*mine_args(sample_manifest, "--cache", CACHE, "--format", "markdown", "--top", "20"))
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(expected)
    for row, cluster in zip(rows, expected, strict=True):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        unescaped = re.sub(r"\\(.)", r"\1", cells[1])
        # Markdown trims cells: a template with a space at an end is quoted.
        template = cluster["template"]
        assert unescaped == (f'"{template}"' if template != template.strip() else template)
        assert int(cells[2]) == cluster["objects"]
        assert cells[3].endswith("%") and float(cells[3][:-1]) >= 0
    assert "t.point.\\*" in done.stdout  # markup escaped ...
    assert "\\." not in done.stdout and "\\-" not in done.stdout  # ... and nothing else


# --------------------------------------------------------------------------
# --sample, --seed, --workers, globs through the CLI
# --------------------------------------------------------------------------


def test_sampled_reports_show_the_interval_in_every_format(
    sample_manifest: dict[str, Any],
) -> None:
    sampled = ("--sample", "0.3", "--seed", "2")
    doc = json_report(sample_manifest, *sampled)
    assert doc["sample"]["seed"] == 2 and doc["sample"]["fraction"] == 0.3
    top = doc["clusters"][:5]
    table = cli(*mine_args(sample_manifest, "--cache", CACHE, *sampled, "--top", "5"))
    assert table.returncode == 0, table.stderr
    assert "95% interval" in table.stdout and "SAMPLED" in table.stdout
    for rank, c in enumerate(top, 1):
        low, high = c["objects_ci95"]
        assert low <= c["objects"] <= high
        assert re.search(rf"^{rank} +~{c['objects']} +{low}-{high} ", table.stdout, re.M), rank
    rows = _csv_rows(cli(*mine_args(sample_manifest, "--cache", CACHE, *sampled,
                                    "--format", "csv")).stdout)  # fmt: skip
    for row, c in zip(rows, doc["clusters"], strict=True):
        assert [int(row["objects_ci95_low"]), int(row["objects_ci95_high"])] == c["objects_ci95"]
    md = cli(*mine_args(sample_manifest, "--cache", CACHE, *sampled, "--format", "markdown"))
    for c in top:
        low, high = c["objects_ci95"]
        assert f"| \\~{c['objects']} | {low}-{high} |" in md.stdout
    other = json_report(sample_manifest, "--sample", "0.3", "--seed", "3")
    assert other["sample"]["seed"] == 3
    assert [c["objects"] for c in other["clusters"]] != [c["objects"] for c in doc["clusters"]]


def test_sample_one_is_the_exact_run(sample_manifest: dict[str, Any]) -> None:
    everything = json_report(sample_manifest, "--sample", "1")
    assert everything["sample"] is None
    assert without_time(everything) == without_time(json_report(sample_manifest))
    table = cli(*mine_args(sample_manifest, "--cache", CACHE, "--sample", "1.0", "--top", "3"))
    assert "SAMPLED" not in table.stdout and "~" not in table.stdout


def test_seed_without_sample_is_a_usage_error(sample_manifest: dict[str, Any]) -> None:
    done = cli(*mine_args(sample_manifest, "--cache", CACHE, "--seed", "3"))
    assert done.returncode == 2
    assert "--sample" in one_line(done.stderr) and done.stdout == ""


def test_workers_beyond_the_cpus_are_capped(sample_manifest: dict[str, Any]) -> None:
    cpus = len(os.sched_getaffinity(0))
    done = cli(*mine_args(sample_manifest, "--cache", CACHE, "--workers", str(cpus + 62),
                          "--format", "json"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    warning = one_line(done.stderr)
    assert f"--workers {cpus + 62}" in warning and f"using {cpus}" in warning
    assert without_time(json.loads(done.stdout)) == without_time(json_report(sample_manifest))


def test_glob_matching_several_caches(sample_manifest: dict[str, Any], open_prog: Any) -> None:
    """``--cache 'kmalloc-*32'``: every match walked, counted as drgn counts them."""
    prog: drgn.Program = open_prog(kdump(sample_manifest), sample_manifest["vmlinux"])
    matched = sorted(
        (c for c in for_each_slab_cache(prog)
         if fnmatch.fnmatchcase(c.name.string_().decode(), "kmalloc-*32")),
        key=lambda c: c.name.string_(),
    )  # fmt: skip
    names = [c.name.string_().decode() for c in matched]
    assert len(names) >= 2 and CACHE in names, names
    usage = [slab_cache_usage(c) for c in matched]
    allocated = sum(allocated_count(prog, name) for name in names)
    report = json_report(sample_manifest, "--cache", "kmalloc-*32")
    assert report["cache"]["caches"] == names
    assert report["cache"]["allocated"] == allocated
    assert report["cache"]["total"] == sum(u.num_objs for u in usage)
    assert report["scan"]["objects_scanned"] == allocated
    family = sample_manifest["planted"][CACHE]
    planted: Counter[str] = Counter()
    for name in names:
        planted.update(count_records(prog, name, family))
    fragments = {f["text"]: f["objects"] for f in report["fragments"]}
    for text in ("sbin/*agt/", "@Vv*/", "usr"):
        assert fragments[text] == planted[text], text


# --------------------------------------------------------------------------
# Follow-ups, --top 0, info, hints
# --------------------------------------------------------------------------


def test_follow_ups_identify_the_struct_and_honour_context(
    sample_manifest: dict[str, Any],
) -> None:
    doc = json_report(sample_manifest, "--before", "8", "--after", "24")
    example = int(doc["clusters"][0]["examples"][0], 16)
    size = doc["cache"]["object_size"]
    table = cli(*mine_args(sample_manifest, "--cache", CACHE, "--before", "8", "--after", "24",
                           "--top", "3"))  # fmt: skip
    assert table.returncode == 0, table.stderr
    words = (8 + size + 24) // 8
    tail = table.stdout.split("look closer:", 1)[1].split()
    assert tail == [
        "crash>", "rd", "-64", f"{example - 8:#x}", str(words),
        "crash>", "kmem", f"{example:#x}",
        "crash>", "search", "-k", f"{example:#x}",
        ">>>", "identify_address(prog,", f"{example:#x})",
    ]  # fmt: skip
    none = cli(*mine_args(sample_manifest, "--cache", CACHE, "--top", "0"))
    assert none.returncode == 0 and "look closer" not in none.stdout
    assert "no clusters to show (--top 0)" in none.stdout


def test_info_never_prints_none(sample_manifest: dict[str, Any]) -> None:
    for entry in sample_manifest["dumps"]:
        done = cli("info", entry["path"])
        assert done.returncode == 0, done.stderr
        assert not re.search(r"\bNone\b", done.stdout), done.stdout
        assert re.search(r"^crash_time +(not recorded in this dump|\d+ \(\d{4}-)", done.stdout,
                         re.M)  # fmt: skip


def test_version_and_defaults_in_help() -> None:
    version = cli("--version")
    assert version.returncode == 0
    pattern = r"dumpminer \S+ \(drgn [\d.]+\S*, Python 3\.\d+\.\d+\S*\)\n"
    assert re.fullmatch(pattern, version.stdout)
    helptext = " ".join(cli("mine", "--help").stdout.split())
    for default in (
        "shortest printable run counted (default: 3)",
        "report format (default: table)",
        "are dropped (default: 1000000)",
        "without --cache: mine K (default: 3)",
        "(default: 0, so runs repeat)",
    ):
        assert default in helptext, default


def test_hints(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    vmcore, vmlinux = kdump(sample_manifest), sample_manifest["vmlinux"]
    upper = cli("mine", vmcore, "--vmlinux", vmlinux, "--cache", "KMALLOC-32")
    assert upper.returncode == 7 and "closest: kmalloc-32" in one_line(upper.stderr)
    # crash's order, VMLINUX VMCORE: an extra argument (2), a vmlinux as the dump (4).
    for args, code in (([vmlinux, vmcore], 2), ([vmlinux], 4)):
        done = cli("mine", *args, "--cache", CACHE)
        assert done.returncode == code
        assert "dumpminer mine VMCORE --vmlinux VMLINUX" in one_line(done.stderr)
        assert "crash's order" in done.stderr


def test_debug_dir_searches_subfolders(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    deep = tmp_path / "unpacked" / "usr-copy" / "debug" / "boot"
    deep.mkdir(parents=True)
    vmlinux = deep / f"vmlinux-{sample_manifest['kernel_release']}"
    vmlinux.symlink_to(sample_manifest["vmlinux"])
    done = cli("mine", kdump(sample_manifest), "--debug-dir", str(tmp_path), "--cache", CACHE,
               "--format", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dump"]["vmlinux"] == str(vmlinux)
