"""
Opening a dump: the one place that turns a vmcore into a drgn program with
the kernel's types and symbols.

Before drgn starts, the dump's own header says what it is
(:mod:`dumpminer.dump.info`). Types and symbols then come from one of:

1. a vmlinux with DWARF, given or found by build ID (:mod:`dumpminer.dump.debuginfo`),
   and checked against the dump so that a wrong one is a clear error instead
   of garbage counts;
2. with ``debuginfod`` asked for, the same vmlinux fetched by build ID from a
   debuginfod server;
3. with neither, the dump itself: the kernel's BTF (:mod:`dumpminer.dump.btf`) for
   types and kallsyms (:mod:`dumpminer.dump.kallsyms`) for symbols, which Linux
   6.0 and later name in VMCOREINFO, and which are found by their shape in
   the kernel's read-only data before (:mod:`dumpminer.dump.kallsymsfind`).

Nothing past this module cares which: :attr:`Dump.debuginfo` only says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import drgn

from dumpminer.dump.btf import BtfError, KernelBtf
from dumpminer.dump.debuginfo import (
    check_vmlinux_matches,
    debuginfo_package_hint,
    debuginfod_urls,
    fetch_vmlinux,
    find_vmlinux,
)
from dumpminer.dump.filtering import check_slab_pages_kept
from dumpminer.dump.info import DumpInfo, check_architecture, read_dump_info
from dumpminer.dump.kallsyms import KernelObjects, add_module_symbols, load_kallsyms
from dumpminer.errors import (
    DebugInfoError,
    InputFileError,
    NoKernelTypesError,
    NotADumpError,
    UsageError,
    first_line,
    show_path,
)

_PLATFORMS = {
    "x86_64": drgn.Platform(
        drgn.Architecture.X86_64,
        drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN,
    ),
}

#: :attr:`Dump.debuginfo` of a dump read with a vmlinux's DWARF.
FROM_VMLINUX = "vmlinux"
#: :attr:`Dump.debuginfo` of a dump read with a vmlinux from debuginfod.
FROM_DEBUGINFOD = "debuginfod"
#: :attr:`Dump.debuginfo` of a dump read with its own BTF and kallsyms.
FROM_BTF = "btf+kallsyms"


@dataclass
class Dump:
    """A vmcore opened with drgn, and what its header says about it."""

    path: str
    info: DumpInfo
    #: The vmlinux whose DWARF drgn reads, or None on BTF and kallsyms.
    vmlinux: str | None
    prog: drgn.Program
    #: Where types and symbols came from: :data:`FROM_VMLINUX`,
    #: :data:`FROM_DEBUGINFOD` or :data:`FROM_BTF`.
    debuginfo: str = FROM_VMLINUX
    #: Why no vmlinux was used, one line for stderr; None with a vmlinux.
    note: str | None = None


def open_dump(
    vmcore: str | os.PathLike[str],
    vmlinux: str | os.PathLike[str] | None = None,
    debug_dirs: Sequence[str] = (),
    *,
    use_vmlinux: bool = True,
    debuginfod: bool | None = None,
) -> Dump:
    """
    Open *vmcore* with the debuginfo in *vmlinux*; without *vmlinux*, find
    the one whose build ID matches the dump in *debug_dirs* and the standard
    places, then (with *debuginfod*, or by default when ``DEBUGINFOD_URLS``
    is set) ask debuginfod for it; when none is found, or with
    ``use_vmlinux=False``, read types and symbols from the dump's own BTF
    and kallsyms. Raises a :class:`~dumpminer.errors.DumpminerError` with a
    one-line reason for every input that cannot be used.
    """
    if vmlinux is not None and not use_vmlinux:
        raise UsageError("--vmlinux names a vmlinux and --no-debuginfo refuses one: pick one")
    path = os.fspath(vmcore)
    # A dump cut short in its memory (a copy that ran out of disk) is still
    # mined: what is missing is counted as faults, see docs/exit-codes.md.
    info = read_dump_info(path, truncated_data_ok=True)
    check_architecture(info)
    source = FROM_VMLINUX
    why: str | None = None
    vmlinux_path: str | None = None
    if vmlinux is not None:
        vmlinux_path = os.fspath(vmlinux)
        if not os.path.isfile(vmlinux_path):
            what = "it is a directory" if os.path.isdir(vmlinux_path) else "no such file"
            raise InputFileError(f"cannot read vmlinux {vmlinux_path}: {what}")
        check_vmlinux_matches(info, vmlinux_path)
    elif use_vmlinux:
        try:
            vmlinux_path = find_vmlinux(info, debug_dirs)
        except DebugInfoError as e:
            why = str(e)
            if debuginfod or (debuginfod is None and debuginfod_urls()):
                try:
                    vmlinux_path = fetch_vmlinux(info)
                    source = FROM_DEBUGINFOD
                except DebugInfoError as fetch_error:
                    why = f"{why}; {fetch_error}"
    prog = _program(path, info)
    if vmlinux_path is None:
        _load_btf_and_kallsyms(prog, info, why)
        # A makedumpfile that predates the kernel may have dropped every slab.
        check_slab_pages_kept(prog, info)
        return Dump(path, info, None, prog, FROM_BTF, _note(why))
    try:
        prog.load_debug_info([vmlinux_path])
    except drgn.MissingDebugInfoError as e:
        raise DebugInfoError(f"no usable debuginfo in {vmlinux_path}: {first_line(e)}") from e
    except Exception as e:
        raise DebugInfoError(f"cannot load {vmlinux_path}: {first_line(e)}") from e
    add_module_symbols(prog)
    check_slab_pages_kept(prog, info)
    return Dump(path, info, vmlinux_path, prog, source)


def _note(why: str | None) -> str:
    """The line that says a dump is read without a vmlinux, and why (None: as asked)."""
    reason = f"{why}; " if why else ""
    return f"{reason}reading types from the kernel's BTF and symbols from kallsyms"


def _program(path: str, info: DumpInfo) -> drgn.Program:
    """A drgn program on the dump, with no debuginfo yet."""
    # QEMU's kdump needs the platform given: its header does not name one
    # that libkdumpfile knows.
    prog = drgn.Program(_PLATFORMS[info.arch])
    try:
        prog.set_core_dump(path)
    except Exception as e:
        # libkdumpfile raises a bare Exception when the dump is cut before
        # the kernel's page tables; any failure here means the same. When
        # the headers say the file is cut short, that is the reason to give
        # (libkdumpfile says "Decompresion failed: unknown compression method").
        if info.cut_short is not None:
            raise NotADumpError(
                f"{show_path(path)} is cut short: {info.cut_short}; drgn cannot open it "
                "(the kernel's page tables are past the cut)"
            ) from e
        raise NotADumpError(f"drgn cannot open {path}: {first_line(e)}") from e
    return prog


def _missing(info: DumpInfo, what: str, why: str | None) -> NoKernelTypesError:
    """
    The error for a dump that cannot be read without a vmlinux: *what* it
    lacks, after *why* no vmlinux was used (None: --no-debuginfo).
    """
    advice = f"{debuginfo_package_hint(info.osrelease)} or pass its directory with --debug-dir"
    # The search's own message ends with the same advice: say it once.
    found = f"{why.removesuffix('; ' + advice)}, and " if why else ""
    return NoKernelTypesError(f"{found}the dump cannot be read without a vmlinux: {what}; {advice}")


def _load_btf_and_kallsyms(prog: drgn.Program, info: DumpInfo, why: str | None) -> None:
    """
    Give *prog* the kernel's types from its BTF and symbols from kallsyms,
    both read from the dump's memory. Raises :class:`NoKernelTypesError`
    naming what the dump lacks.
    """
    try:
        symbols = load_kallsyms(prog)
    except LookupError as e:
        raise _missing(info, f"no kallsyms tables ({e})", why) from e
    except Exception as e:  # drgn raises several kinds on garbage tables
        raise _missing(info, f"its kallsyms tables are unreadable ({first_line(e)})", why) from e
    prog.register_symbol_finder("kallsyms", symbols, enable_index=0)
    bounds = [symbols(prog, name, None, True) for name in ("__start_BTF", "__stop_BTF")]
    if not bounds[0] or not bounds[1]:
        raise _missing(info, "no BTF in the kernel (built without CONFIG_DEBUG_INFO_BTF)", why)
    start, stop = bounds[0][0].address, bounds[1][0].address
    try:
        data = prog.read(start, stop - start)
        btf = KernelBtf(prog, data)
    except drgn.FaultError as e:
        raise _missing(info, f"its BTF at {start:#x} is not in the dump ({e})", why) from e
    except (BtfError, ValueError) as e:
        raise _missing(info, f"its BTF at {start:#x} is corrupt ({e})", why) from e
    prog.register_type_finder(
        "btf",
        lambda prog, kinds, name, filename: (
            None if filename is not None else btf.find_type(kinds, name)
        ),
        enable_index=0,
    )
    prog.register_object_finder("btf", KernelObjects(btf, symbols), enable_index=-1)
    add_module_symbols(prog)
