"""Tests for dumpminer.dump.debuginfo: build-ID reading, vmlinux search and verification."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from dumpminer.dump.debuginfo import (
    check_vmlinux_matches,
    debuginfo_package_hint,
    find_vmlinux,
    standard_vmlinux_paths,
    vmlinux_build_id,
    vmlinux_has_debuginfo,
)
from dumpminer.dump.info import DumpInfo, read_dump_info
from dumpminer.errors import DebugInfoError, InputFileError

REL = "6.1.0-18-amd64"
BID = "aa" * 20
OTHER = "bb" * 20


def fake_vmlinux(build_id: str | None = BID, debug_info: bool = True) -> bytes:
    """A minimal ELF64 executable with .note.gnu.build-id and .debug_info."""
    sections: list[tuple[str, int, bytes]] = []  # name, sh_type, data
    if build_id is not None:
        desc = bytes.fromhex(build_id)
        sections.append(
            (".note.gnu.build-id", 7, struct.pack("<III", 4, len(desc), 3) + b"GNU\0" + desc)
        )
    sections.append((".text", 1, b"\x90" * 16))
    if debug_info:
        sections.append((".debug_info", 1, b"\x01" * 32))
    names = b"\0" + b"".join(n.encode() + b"\0" for n, _, _ in sections) + b".shstrtab\0"
    sections.append((".shstrtab", 3, names))

    body = b""
    offsets = []
    for _, _, data in sections:
        offsets.append(64 + len(body))
        body += data + b"\0" * (-len(data) % 8)
    shoff = 64 + len(body)
    shdrs = b"\0" * 64
    for (name, stype, data), off in zip(sections, offsets, strict=True):
        shdrs += struct.pack(
            "<IIQQQQIIQQ",
            names.index(name.encode() + b"\0"),
            stype,
            0,
            0,
            off,
            len(data),
            0,
            0,
            4,
            0,
        )
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    ehdr = ident + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, 0, 0, shoff, 0, 64, 56, 0, 64, len(sections) + 1, len(sections)
    )
    return ehdr + body + shdrs


def put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def dump_info(build_id: str | None = BID, osrelease: str | None = REL) -> DumpInfo:
    return DumpInfo(
        path="/x/vmcore",
        format="kdump",
        arch="x86_64",
        osrelease=osrelease,
        build_id=build_id,
        crash_time=None,
        page_size=4096,
        kerneloffset=None,
        phys_mem_bytes=None,
        filtered=False,
        dump_level=0,
        vmcoreinfo={},
    )


# --------------------------------------------------------------------------
# Reading a vmlinux
# --------------------------------------------------------------------------


def test_build_id_and_debuginfo(tmp_path: Path) -> None:
    p = put(tmp_path / "vmlinux", fake_vmlinux())
    assert vmlinux_build_id(p) == BID
    assert vmlinux_has_debuginfo(p) is True
    q = put(tmp_path / "stripped", fake_vmlinux(build_id=None, debug_info=False))
    assert vmlinux_build_id(q) is None
    assert vmlinux_has_debuginfo(q) is False


def test_missing_vmlinux(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="No such file"):
        vmlinux_build_id(tmp_path / "nope")
    with pytest.raises(InputFileError):
        vmlinux_has_debuginfo(tmp_path / "nope")


@pytest.mark.parametrize("data", [b"", b"MZ\x90\x00 a vmlinuz", b"\x7fELF\x02\x01"])
def test_not_elf(tmp_path: Path, data: bytes) -> None:
    p = put(tmp_path / "vmlinuz", data)
    with pytest.raises(DebugInfoError) as exc:
        vmlinux_build_id(p)
    assert "\n" not in str(exc.value)


def _bin_ls_build_id() -> str:
    bid = vmlinux_build_id("/bin/ls") if os.path.exists("/bin/ls") else None
    if bid is None:
        pytest.skip("/bin/ls has no GNU build-ID note here")
    return bid


def test_copy_of_elf_with_altered_build_id_is_refused(tmp_path: Path) -> None:
    bid = _bin_ls_build_id()
    copy = tmp_path / "vmlinux"
    shutil.copyfile("/bin/ls", copy)
    data = bytearray(copy.read_bytes())
    at = data.index(bytes.fromhex(bid))
    data[at + 3] ^= 0xFF
    copy.write_bytes(bytes(data))
    altered = vmlinux_build_id(copy)
    assert altered is not None and altered != bid
    info = dump_info(build_id=bid)
    with pytest.raises(DebugInfoError, match="does not match the dump's BUILD-ID") as exc:
        check_vmlinux_matches(info, copy)
    msg = str(exc.value)
    assert altered in msg and bid in msg and REL in msg and "\n" not in msg


# --------------------------------------------------------------------------
# check_vmlinux_matches
# --------------------------------------------------------------------------


def test_check_accepts_match(tmp_path: Path) -> None:
    check_vmlinux_matches(dump_info(), put(tmp_path / "v", fake_vmlinux()))
    # A dump without BUILD-ID cannot be checked; debug info is still required.
    check_vmlinux_matches(dump_info(build_id=None), put(tmp_path / "w", fake_vmlinux(OTHER)))


def test_check_refuses_other_build(tmp_path: Path) -> None:
    p = put(tmp_path / "v", fake_vmlinux(OTHER))
    with pytest.raises(DebugInfoError) as exc:
        check_vmlinux_matches(dump_info(), p)
    assert str(exc.value).startswith(
        f"vmlinux build ID {OTHER} does not match the dump's BUILD-ID {BID} (dump OSRELEASE {REL})"
    )


def test_check_refuses_stripped(tmp_path: Path) -> None:
    p = put(tmp_path / "v", fake_vmlinux(debug_info=False))
    with pytest.raises(DebugInfoError, match=r"no \.debug_info.*linux-image-6\.1\.0-18-amd64-dbg"):
        check_vmlinux_matches(dump_info(), p)


# --------------------------------------------------------------------------
# find_vmlinux
# --------------------------------------------------------------------------


def test_standard_paths() -> None:
    assert standard_vmlinux_paths(REL) == [
        f"/usr/lib/debug/boot/vmlinux-{REL}",
        f"/usr/lib/debug/lib/modules/{REL}/vmlinux",
        f"/lib/modules/{REL}/build/vmlinux",
        f"/boot/vmlinux-{REL}",
    ]


@pytest.mark.parametrize(
    "rel_path",
    [
        f"vmlinux-{REL}",
        "vmlinux",
        f"usr/lib/debug/boot/vmlinux-{REL}",
        f".build-id/aa/{'aa' * 19}.debug",
    ],
)
def test_find_in_debug_dir(tmp_path: Path, rel_path: str) -> None:
    d = tmp_path / "dbg"
    want = put(d / rel_path, fake_vmlinux())
    assert find_vmlinux(dump_info(), [str(d)], root=str(tmp_path / "root")) == str(want)


def test_find_skips_wrong_build_and_stripped(tmp_path: Path) -> None:
    d = tmp_path / "dbg"
    put(d / f"vmlinux-{REL}", fake_vmlinux(OTHER))  # same release, other build
    put(d / "vmlinux", fake_vmlinux(debug_info=False))  # right build, stripped
    root = tmp_path / "root"
    want = put(root / f"usr/lib/debug/lib/modules/{REL}/vmlinux", fake_vmlinux())
    assert find_vmlinux(dump_info(), [str(d)], root=str(root)) == str(want)


def test_find_debug_dir_before_system(tmp_path: Path) -> None:
    root = tmp_path / "root"
    put(root / f"boot/vmlinux-{REL}", fake_vmlinux())
    d = tmp_path / "dbg"
    want = put(d / "vmlinux", fake_vmlinux())
    assert find_vmlinux(dump_info(), [str(d)], root=str(root)) == str(want)


def test_find_accepts_a_file_as_debug_dir(tmp_path: Path) -> None:
    want = put(tmp_path / "my-vmlinux", fake_vmlinux())
    assert find_vmlinux(dump_info(), [str(want)], root=str(tmp_path)) == str(want)


def test_find_nothing_names_release_and_package(tmp_path: Path) -> None:
    d = tmp_path / "dbg"
    bad = put(d / f"vmlinux-{REL}", fake_vmlinux(OTHER))
    with pytest.raises(DebugInfoError) as exc:
        find_vmlinux(dump_info(), [str(d)], root=str(tmp_path / "root"))
    msg = str(exc.value)
    assert "\n" not in msg
    assert REL in msg and BID in msg
    assert f"linux-image-{REL}-dbg" in msg
    assert str(bad) in msg  # says what it rejected


def test_find_missing_debug_dir(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="debug directory"):
        find_vmlinux(dump_info(), [str(tmp_path / "nope")], root=str(tmp_path))


def test_find_without_dump_build_id_takes_first_with_debuginfo(tmp_path: Path) -> None:
    d = tmp_path / "dbg"
    put(d / f"vmlinux-{REL}", fake_vmlinux(debug_info=False))
    want = put(d / "vmlinux", fake_vmlinux(OTHER))
    assert find_vmlinux(dump_info(build_id=None), [str(d)], root=str(tmp_path)) == str(want)


@pytest.mark.parametrize(
    ("rel", "expect"),
    [
        ("6.1.0-18-amd64", "linux-image-6.1.0-18-amd64-dbg (Debian)"),
        ("6.12.117+deb12-cloud-amd64", "linux-image-6.12.117+deb12-cloud-amd64-dbg"),
        ("5.15.0-91-generic", "linux-image-unsigned-5.15.0-91-generic-dbgsym (Ubuntu)"),
        (
            "5.14.0-362.8.1.el9_3.x86_64",
            "kernel-debuginfo-5.14.0-362.8.1.el9_3.x86_64 "
            "(debuginfo-install kernel-5.14.0-362.8.1.el9_3.x86_64)",
        ),
        ("6.6.6-custom", "linux-image-6.6.6-custom-dbg (Debian)"),
    ],
)
def test_package_hint(rel: str, expect: str) -> None:
    assert expect in debuginfo_package_hint(rel)


# --------------------------------------------------------------------------
# Real sample (tests/conftest.py builds it)
# --------------------------------------------------------------------------


def test_real_find_vmlinux(sample_manifest: dict[str, Any], tmp_path: Path) -> None:
    vmlinux = sample_manifest["vmlinux"]
    dump = sample_manifest["dumps"][0]["path"]
    info = read_dump_info(dump)
    assert vmlinux_has_debuginfo(vmlinux)
    d = tmp_path / "debug"
    d.mkdir()
    link = d / f"vmlinux-{info.osrelease}"
    link.symlink_to(vmlinux)
    assert find_vmlinux(info, [str(d)], root=str(tmp_path / "empty-root")) == str(link)
    check_vmlinux_matches(info, link)
