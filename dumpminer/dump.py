"""
Opening a dump: the one place that turns a vmcore and a vmlinux into a drgn
program with the kernel's types and symbols.

Before drgn starts, the dump's own header says what it is
(:mod:`dumpminer.dumpinfo`) and the vmlinux is checked against it
(:mod:`dumpminer.debuginfo`), so that a wrong vmlinux is a clear error instead
of garbage counts. Later ways to get types and symbols (the kernel's BTF and
kallsyms, with no debuginfo package) belong here too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import drgn

from dumpminer.allocator import check_slab_pages_kept
from dumpminer.debuginfo import check_vmlinux_matches, find_vmlinux
from dumpminer.dumpinfo import DumpInfo, check_architecture, read_dump_info
from dumpminer.errors import DebugInfoError, InputFileError, NotADumpError, first_line

_PLATFORMS = {
    "x86_64": drgn.Platform(
        drgn.Architecture.X86_64,
        drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN,
    ),
}


@dataclass
class Dump:
    """A vmcore opened with drgn, and what its header says about it."""

    path: str
    info: DumpInfo
    vmlinux: str
    prog: drgn.Program


def open_dump(
    vmcore: str | os.PathLike[str],
    vmlinux: str | os.PathLike[str] | None = None,
    debug_dirs: Sequence[str] = (),
) -> Dump:
    """
    Open *vmcore* with the debuginfo in *vmlinux*; without *vmlinux*, find
    the one whose build ID matches the dump in *debug_dirs* and the standard
    places. Raises a :class:`~dumpminer.errors.DumpminerError` with a one-line
    reason for every input that cannot be used.
    """
    path = os.fspath(vmcore)
    # A dump cut short in its memory (a copy that ran out of disk) is still
    # mined: what is missing is counted as faults, see docs/exit-codes.md.
    info = read_dump_info(path, truncated_data_ok=True)
    check_architecture(info)
    if vmlinux is None:
        vmlinux_path = find_vmlinux(info, debug_dirs)
    else:
        vmlinux_path = os.fspath(vmlinux)
        if not os.path.isfile(vmlinux_path):
            why = "it is a directory" if os.path.isdir(vmlinux_path) else "no such file"
            raise InputFileError(f"cannot read vmlinux {vmlinux_path}: {why}")
        check_vmlinux_matches(info, vmlinux_path)
    # QEMU's kdump needs the platform given: its header does not name one
    # that libkdumpfile knows.
    prog = drgn.Program(_PLATFORMS[info.arch])
    try:
        prog.set_core_dump(path)
    except Exception as e:
        # libkdumpfile raises a bare Exception when the dump is cut before
        # the kernel's page tables; any failure here means the same.
        raise NotADumpError(f"drgn cannot open {path}: {first_line(e)}") from e
    try:
        prog.load_debug_info([vmlinux_path])
    except drgn.MissingDebugInfoError as e:
        raise DebugInfoError(f"no usable debuginfo in {vmlinux_path}: {first_line(e)}") from e
    except Exception as e:
        raise DebugInfoError(f"cannot load {vmlinux_path}: {first_line(e)}") from e
    # A makedumpfile that predates the kernel may have dropped every slab.
    check_slab_pages_kept(prog, info)
    return Dump(path=path, info=info, vmlinux=vmlinux_path, prog=prog)
