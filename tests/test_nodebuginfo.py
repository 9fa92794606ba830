"""
Mining without a vmlinux: the kernel's BTF and kallsyms give the same reports.

On every dump format of both kernel series, ``mine`` and ``caches`` read with
the dump alone (``--no-debuginfo``, or no vmlinux to be found) must equal what
they give with the sample's vmlinux, field for field, except the fields that
say where types came from; and the planted records must be counted as planted
(counted by tests/oracle.py with drgn's own helpers and DWARF). A dump that
lacks what this needs fails with exit 11 and one line. debuginfod is tested
against a real ``debuginfod`` server on 127.0.0.1 serving the sample's vmlinux.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from drgn.helpers.linux.slab import find_slab_cache, slab_cache_for_each_allocated_object
from oracle import count_records, open_prog

import dumpminer
from dumpminer.dump.kallsymsfind import DIGIT_TOKENS
from dumpminer.dump.open import FROM_BTF, FROM_DEBUGINFOD, FROM_VMLINUX
from dumpminer.errors import NoKernelTypesError
from dumpminer.report.json import to_json_dict
from dumpminer.slub.walk import WalkStats, walk_slabs

REPO = Path(__file__).resolve().parent.parent
FORMATS = ["kdump", "elf", "makedumpfile"]
#: Fields that say where types came from: the only ones allowed to differ.
SOURCE_FIELDS = ("vmlinux", "debuginfo")


def _path(manifest: dict[str, Any], fmt: str) -> str:
    return str(next(d for d in manifest["dumps"] if d["format"] == fmt)["path"])


@cache
def _opened(vmcore: str, vmlinux: str | None) -> dumpminer.Dump:
    if vmlinux is None:
        return dumpminer.open_dump(vmcore, use_vmlinux=False)
    return dumpminer.open_dump(vmcore, vmlinux)


@cache
def _report(vmcore: str, vmlinux: str | None, cache_name: str, context: int) -> dict[str, Any]:
    dump = _opened(vmcore, vmlinux)
    report = dumpminer.mine(dump.prog, cache_name, before=context, after=context, dump=dump)
    return to_json_dict(report)


def _without_source(report: dict[str, Any], keep_time: bool = False) -> dict[str, Any]:
    """
    The report without where types came from and the run's seconds; and without the
    dump's time (which only the CLI adds) unless *keep_time*, for CLI-to-CLI comparisons.
    """
    out = json.loads(json.dumps(report))
    for field in SOURCE_FIELDS:
        out["dump"].pop(field)
    if not keep_time:
        out["dump"].pop("time", None)
        out["dump"].pop("time_source", None)
        out["dump"].pop("time_utc", None)
    out["scan"].pop("seconds")
    return out


def _hidden_env(tmp_path: Path) -> dict[str, str]:
    """An environment where no vmlinux can be found: empty standard paths, no debuginfod."""
    root = tmp_path / "empty-root"
    root.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEBUGINFOD_")}
    env["DUMPMINER_DEBUGINFO_ROOT"] = str(root)
    env["PYTHONPATH"] = str(REPO)
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "dumpminer.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
        check=False,
    )


# --- the library: same reports, planted counts ---------------------------------------------


@pytest.mark.parametrize("context", [0, 16], ids=["objects", "context"])
@pytest.mark.parametrize("cache_name", ["kmalloc-32", "kmalloc-64"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_same_report_without_vmlinux(
    sample_manifest: dict[str, Any], fmt: str, cache_name: str, context: int
) -> None:
    vmcore, vmlinux = _path(sample_manifest, fmt), sample_manifest["vmlinux"]
    with_vmlinux = _report(vmcore, vmlinux, cache_name, context)
    without = _report(vmcore, None, cache_name, context)
    assert with_vmlinux["dump"]["debuginfo"] == FROM_VMLINUX
    assert without["dump"]["debuginfo"] == FROM_BTF and without["dump"]["vmlinux"] is None
    assert _without_source(without) == _without_source(with_vmlinux)
    assert without["fragments"] and without["clusters"]


@pytest.mark.parametrize("cache_name", ["kmalloc-32", "kmalloc-64"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_planted_counts_without_vmlinux(
    sample_manifest: dict[str, Any], fmt: str, cache_name: str
) -> None:
    """The planted records, counted by the DWARF oracle, are in the BTF report."""
    vmcore = _path(sample_manifest, fmt)
    planted = sample_manifest["planted"][cache_name]
    oracle = count_records(open_prog(vmcore, sample_manifest["vmlinux"]), cache_name, planted)
    assert dict(oracle) == planted["strings"]
    report = _report(vmcore, None, cache_name, 0)
    found = {f["text"]: f for f in report["fragments"]}
    for text, count in planted["strings"].items():
        assert found[text]["offsets"].get(str(planted["string_offset"])) == count, text
    clusters = {c["template"]: c for c in report["clusters"]}
    for template, count in planted.get("templates", {}).items():
        assert clusters[template]["objects"] >= count, template


@pytest.mark.parametrize("fmt", FORMATS)
def test_drgn_slab_helpers_and_walk_on_btf(sample_manifest: dict[str, Any], fmt: str) -> None:
    """drgn's own slab helper and dumpminer's walk find DWARF's objects on BTF."""
    vmcore = _path(sample_manifest, fmt)
    dwarf = open_prog(vmcore, sample_manifest["vmlinux"])
    btf = _opened(vmcore, None).prog
    for cache_name in ("kmalloc-32", "kmalloc-64"):
        want = sorted(
            o.value_()
            for o in slab_cache_for_each_allocated_object(
                find_slab_cache(dwarf, cache_name), "void"
            )
        )
        btf_cache = find_slab_cache(btf, cache_name)
        helper = sorted(o.value_() for o in slab_cache_for_each_allocated_object(btf_cache, "void"))
        walked = sorted(
            slab.object_address(i)
            for slab in walk_slabs(btf, [btf_cache], stats=WalkStats(), merge_full=True)
            for i in range(slab.objects)
            if slab.allocated[i]
        )
        assert helper == want and walked == want, cache_name


def test_workers_without_vmlinux(sample_manifest: dict[str, Any]) -> None:
    """Worker processes reopen the dump as it was opened: on BTF too."""
    vmcore = _path(sample_manifest, "kdump")
    dump = _opened(vmcore, None)
    split = to_json_dict(dumpminer.mine(dump.prog, "kmalloc-32", dump=dump, workers=2))
    assert _without_source(split) == _without_source(_report(vmcore, None, "kmalloc-32", 0))


# --- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_caches_without_vmlinux_equals_caches_with_it(
    sample_manifest: dict[str, Any], fmt: str
) -> None:
    vmcore = _path(sample_manifest, fmt)
    given = cli("caches", vmcore, "--vmlinux", sample_manifest["vmlinux"], "--format", "json")
    alone = cli("caches", vmcore, "--no-debuginfo", "--format", "json")
    assert given.returncode == 0 and alone.returncode == 0, alone.stderr
    assert given.stderr == ""
    assert alone.stderr == (
        "dumpminer: reading types from the kernel's BTF and symbols from kallsyms\n"
    )
    assert json.loads(alone.stdout)["caches"] and alone.stdout == given.stdout


def test_vmlinux_hidden_completely(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    """No --vmlinux, an empty --debug-dir, empty standard paths, no debuginfod: BTF, same report."""
    vmcore = _path(sample_manifest, "kdump")
    env = _hidden_env(tmp_path)
    empty = tmp_path / "empty-debug"
    empty.mkdir()
    out = tmp_path / "report.json"
    args = ["mine", vmcore, "--debug-dir", str(empty), "--format", "json", "--quiet"]
    done = cli(*args, "--cache", "kmalloc-32", "-o", str(out), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    note = done.stderr
    assert note.count("\n") == 1 and note.startswith("dumpminer: no vmlinux with debug info")
    assert sample_manifest["build_id"] in note
    assert f"linux-image-{sample_manifest['kernel_release']}-dbg" in note
    assert note.rstrip().endswith("reading types from the kernel's BTF and symbols from kallsyms")
    report = json.loads(out.read_text())
    assert report["dump"]["debuginfo"] == FROM_BTF and report["dump"]["vmlinux"] is None
    given = cli(
        "mine", vmcore, "--vmlinux", sample_manifest["vmlinux"], "--cache", "kmalloc-32",
        "--format", "json", "--quiet",
    )  # fmt: skip
    assert given.returncode == 0, given.stderr
    assert _without_source(report, True) == _without_source(json.loads(given.stdout), True)
    assert report["dump"]["time_source"] == "tk_core.timekeeper.xtime_sec"
    # Without --cache: the largest caches, chosen and mined alike.
    top = cli(*args, "--caches-top", "2", env=env)
    top_given = cli(
        "mine", vmcore, "--vmlinux", sample_manifest["vmlinux"], "--caches-top", "2",
        "--format", "json", "--quiet",
    )  # fmt: skip
    assert top.returncode == 0 and top_given.returncode == 0, top.stderr
    ours, theirs = json.loads(top.stdout)["reports"], json.loads(top_given.stdout)["reports"]
    assert [_without_source(r) for r in ours] == [_without_source(r) for r in theirs]


def test_vmlinux_and_no_debuginfo_contradict(sample_manifest: dict[str, Any]) -> None:
    vmcore = _path(sample_manifest, "kdump")
    done = cli("caches", vmcore, "--vmlinux", sample_manifest["vmlinux"], "--no-debuginfo")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "--no-debuginfo" in done.stderr


def _patched_copy(vmcore: str, tmp_path: Path, *changes: tuple[bytes, bytes]) -> str:
    """
    A copy of *vmcore* with every *old* replaced by *new* (as long) for each
    ``(old, new)`` of *changes*; an *old* not in the dump is left alone, but
    one of them at least must be there.
    """
    data = Path(vmcore).read_bytes()
    found = 0
    for old, new in changes:
        assert len(old) == len(new)
        found += data.count(old)
        data = data.replace(old, new)
    assert found
    copy = tmp_path / "patched.vmcore"
    copy.write_bytes(data)
    return str(copy)


#: VMCOREINFO's kallsyms lines (Linux 6.0 on), renamed so that no reader finds them.
NO_KALLSYMS_VMCOREINFO = (b"SYMBOL(kallsyms_", b"SYMBOL(kallsymX_")
#: The run of digit tokens that kallsyms' token table holds, broken ('9' made 'Z').
NO_DIGIT_TOKENS = (DIGIT_TOKENS, DIGIT_TOKENS.replace(b"9", b"Z"))
#: The header of the kernel's BTF (magic 0xeb9f, version 1, header length 24), broken.
NO_BTF_MAGIC = (b"\x9f\xeb\x01\x00\x18\x00\x00\x00", b"\x00\x00\x01\x00\x18\x00\x00\x00")


@pytest.mark.parametrize("fmt", ["kdump", "elf"])
def test_kallsyms_found_where_vmcoreinfo_names_none(
    sample_manifest: dict[str, Any], tmp_path: Path, fmt: str
) -> None:
    """
    Without VMCOREINFO's kallsyms lines (5.10 has none; on 6.x they are hidden), the
    tables are found in the dump by their shape, and the report equals the one with a
    vmlinux: on 6.1 with kallsyms_seqs_of_names between markers and tokens, on 6.12 with
    the addresses after the token index, on 5.10 before the names.
    """
    original = _path(sample_manifest, fmt)
    with open(original, "rb") as handle:
        named = NO_KALLSYMS_VMCOREINFO[0] in handle.read(1 << 20)  # the notes come first
    vmcore = _patched_copy(original, tmp_path, NO_KALLSYMS_VMCOREINFO) if named else original
    dump = dumpminer.open_dump(vmcore, use_vmlinux=False)
    assert b"SYMBOL(kallsyms_names)" not in dump.prog["VMCOREINFO"].string_()
    ours = _without_source(to_json_dict(dumpminer.mine(dump.prog, "kmalloc-32", dump=dump)))
    theirs = _without_source(_report(original, sample_manifest["vmlinux"], "kmalloc-32", 0))
    ours["dump"].pop("path")
    theirs["dump"].pop("path")
    assert ours == theirs


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ((NO_KALLSYMS_VMCOREINFO, NO_DIGIT_TOKENS), "no kallsyms tables found"),
        ((NO_BTF_MAGIC,), "is corrupt"),
    ],
    ids=["no-kallsyms", "no-btf"],
)
def test_dump_without_what_btf_needs(
    sample_manifest: dict[str, Any],
    tmp_path: Path,
    changes: tuple[tuple[bytes, bytes], ...],
    says: str,
) -> None:
    """No vmlinux and a dump that cannot do without: exit 11, one line, what and which package."""
    vmcore = _patched_copy(_path(sample_manifest, "elf"), tmp_path, *changes)
    for args in (["--no-debuginfo"], ["--debug-dir", str(tmp_path)]):
        done = cli("mine", vmcore, *args, "--cache", "kmalloc-32", env=_hidden_env(tmp_path))
        assert done.returncode == NoKernelTypesError.exit_code == 11, done.stderr
        assert done.stdout == "" and done.stderr.count("\n") == 1
        assert says in done.stderr and "cannot be read without a vmlinux" in done.stderr
        assert "-dbg (Debian)" in done.stderr
        if args[0] == "--debug-dir":
            assert "no vmlinux with debug info" in done.stderr


# --- debuginfod --------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_debuginfod(tmp_path: Path, served: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """A real debuginfod on 127.0.0.1 scanning a directory of links to *served*."""
    binary = shutil.which("debuginfod")
    assert binary, "debuginfod is not installed (apt-get install debuginfod)"
    files = tmp_path / "served"
    files.mkdir()
    for path in served:
        (files / os.path.basename(path)).symlink_to(path)
    port = _free_port()
    server = subprocess.Popen(
        [
            binary, "-F", "-L", "--disable-source-scan", "-t", "0", "-g", "0", "-c", "1",
            "-p", str(port), "-d", str(tmp_path / "debuginfod.sqlite"), str(files),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
                metrics = answer.read().decode()
            scanned = [line for line in metrics.splitlines() if line.startswith("scanned_files")]
            pending = [
                line
                for line in metrics.splitlines()
                if line.startswith(('thread_work_pending{role="scan"}', 'thread_busy{role="scan"}'))
            ]
            if not served or (
                scanned
                and sum(float(line.split()[-1]) for line in scanned) >= len(served)
                and all(line.endswith(" 0") for line in pending)
            ):
                return server, url
        except OSError:
            pass
        if server.poll() is not None:
            break
        time.sleep(0.5)
    server.terminate()
    server.wait(10)
    raise AssertionError("debuginfod did not scan its files in time")


def test_debuginfod_serves_the_vmlinux(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    """No vmlinux on disk; debuginfod (opt-in by DEBUGINFOD_URLS) has it by build ID."""
    vmcore = _path(sample_manifest, "kdump")
    server, url = _start_debuginfod(tmp_path, [sample_manifest["vmlinux"]])
    cache_dir = tmp_path / "client-cache"
    try:
        env = {**_hidden_env(tmp_path), "DEBUGINFOD_URLS": url}
        env["DEBUGINFOD_CACHE_PATH"] = str(cache_dir)
        done = cli("mine", vmcore, "--cache", "kmalloc-64", "--format", "json", "--quiet", env=env)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        report = json.loads(done.stdout)
        fetched = cache_dir / sample_manifest["build_id"] / "debuginfo"
        assert report["dump"]["debuginfo"] == FROM_DEBUGINFOD
        assert report["dump"]["vmlinux"] == str(fetched)
        assert fetched.stat().st_size == Path(sample_manifest["vmlinux"]).stat().st_size
        given = _report(vmcore, sample_manifest["vmlinux"], "kmalloc-64", 0)
        assert _without_source(report) == _without_source(given)
        # Cached: the second run asks no server (it is gone) and gets the same.
        server.terminate()
        server.wait(10)
        again = cli("caches", vmcore, "--debuginfod", "--format", "json", env=env)
        assert again.returncode == 0 and again.stderr == "", again.stderr
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(cache_dir, ignore_errors=True)


def test_debuginfod_without_the_build_falls_back_to_btf(
    sample_manifest: dict[str, Any], tmp_path: Path
) -> None:
    """A server that lacks the build: 404 is named, and the dump is read on BTF."""
    vmcore = _path(sample_manifest, "kdump")
    server, url = _start_debuginfod(tmp_path, [])
    try:
        env = {**_hidden_env(tmp_path), "DEBUGINFOD_CACHE_PATH": str(tmp_path / "cache")}
        done = cli(
            "caches",
            vmcore,
            "--debuginfod",
            "--format",
            "json",
            env={**env, "DEBUGINFOD_URLS": url},
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr.count("\n") == 1
        assert f"{url}: HTTP 404" in done.stderr and "BTF" in done.stderr
        unasked = cli("caches", vmcore, "--debuginfod", "--format", "json", env=env)
        assert unasked.returncode == 0
        assert "DEBUGINFOD_URLS names no server" in unasked.stderr
        assert unasked.stdout == done.stdout
    finally:
        server.terminate()
        server.wait(10)
