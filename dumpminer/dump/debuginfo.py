"""
Find the vmlinux that goes with a dump, and prove it is the right one.

A vmlinux is accepted only if it carries DWARF (``.debug_info``) and, when the
dump records a VMCOREINFO ``BUILD-ID``, its GNU build-ID note equals it: a
kernel of the same release but another build gives wrong structure offsets
and silently wrong results, so a mismatch is always an error.

A vmlinux is looked for in the directories given, then in the standard
places under ``/`` (or ``$DUMPMINER_DEBUGINFO_ROOT``, which tests point at an
empty directory), then, when asked, on the debuginfod servers named in
``$DEBUGINFOD_URLS``, by build ID.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from dumpminer.dump.info import DumpInfo, iter_elf_notes
from dumpminer.errors import DebugInfoError, InputFileError, show_path

__all__ = [
    "check_vmlinux_matches",
    "debuginfo_package_hint",
    "debuginfod_urls",
    "fetch_vmlinux",
    "find_vmlinux",
    "looks_like_vmlinux",
    "standard_vmlinux_paths",
    "system_root",
    "vmlinux_build_id",
    "vmlinux_has_debuginfo",
]

_NT_GNU_BUILD_ID = 3
#: Largest note section read looking for the build ID.
_MAX_NOTE_SECTION = 1 << 20


def _open_elf(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Open ``path`` as ELF; return (file, ELFFile).  Caller closes the file."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    spath = os.fsdecode(path)
    try:
        f = open(spath, "rb")  # noqa: SIM115 - returned to the caller
    except OSError as e:
        raise InputFileError(f"cannot read vmlinux {show_path(spath)}: {e.strerror or e}") from e
    try:
        if f.read(4) != b"\x7fELF":
            raise DebugInfoError(
                f"{show_path(spath)} is not an ELF file (a compressed vmlinuz? "
                "dumpminer needs the uncompressed vmlinux with debug info)"
            )
        f.seek(0)
        return f, ELFFile(f)
    except DebugInfoError:
        f.close()
        raise
    except OSError as e:
        f.close()
        raise InputFileError(f"cannot read vmlinux {show_path(spath)}: {e.strerror or e}") from e
    except ELFError as e:
        f.close()
        raise DebugInfoError(f"{show_path(spath)} is a corrupt ELF file ({e})") from e
    except Exception as e:  # pyelftools/construct raise many kinds on bad input
        f.close()
        raise DebugInfoError(
            f"{show_path(spath)} is a corrupt ELF file ({type(e).__name__})"
        ) from e


def _build_id_notes(elf: Any) -> Iterator[bytes]:
    """Yield the raw bytes of every note section (or PT_NOTE segment)."""
    found = False
    for sec in elf.iter_sections():
        if sec["sh_type"] == "SHT_NOTE" and 0 < sec["sh_size"] <= _MAX_NOTE_SECTION:
            found = True
            yield sec.data()
    if not found:
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_NOTE" and 0 < seg["p_filesz"] <= _MAX_NOTE_SECTION:
                yield seg.data()


def vmlinux_build_id(path: str | os.PathLike[str]) -> str | None:
    """
    Return the GNU build ID of an ELF file in lower-case hex, or ``None``.

    :raises InputFileError: if the file is missing or unreadable.
    :raises DebugInfoError: if it is not an ELF file.
    """
    f, elf = _open_elf(path)
    with f:
        try:
            for data in _build_id_notes(elf):
                for name, ntype, desc in iter_elf_notes(data, not elf.little_endian):
                    if name == b"GNU" and ntype == _NT_GNU_BUILD_ID and desc:
                        return desc.hex()
        except OSError as e:
            raise InputFileError(f"cannot read vmlinux {show_path(os.fsdecode(path))}: {e}") from e
        except Exception as e:
            raise DebugInfoError(
                f"{show_path(os.fsdecode(path))} is a corrupt ELF file ({type(e).__name__})"
            ) from e
    return None


def vmlinux_has_debuginfo(path: str | os.PathLike[str]) -> bool:
    """
    Return whether an ELF file has a non-empty ``.debug_info`` section.

    :raises InputFileError: if the file is missing or unreadable.
    :raises DebugInfoError: if it is not an ELF file.
    """
    f, elf = _open_elf(path)
    with f:
        try:
            sec = elf.get_section_by_name(".debug_info")
        except Exception as e:
            raise DebugInfoError(
                f"{show_path(os.fsdecode(path))} is a corrupt ELF file ({type(e).__name__})"
            ) from e
        return bool(sec is not None and sec["sh_type"] != "SHT_NOBITS" and sec["sh_size"] > 0)


def standard_vmlinux_paths(osrelease: str) -> list[str]:
    """
    Return where distributions install a vmlinux for ``osrelease``, most
    likely first (debug packages before the build tree and /boot).
    """
    return [
        f"/usr/lib/debug/boot/vmlinux-{osrelease}",
        f"/usr/lib/debug/lib/modules/{osrelease}/vmlinux",
        f"/lib/modules/{osrelease}/build/vmlinux",
        f"/boot/vmlinux-{osrelease}",
    ]


def _build_id_path(build_id: str) -> str:
    return f".build-id/{build_id[:2]}/{build_id[2:]}.debug"


#: How deep below a --debug-dir vmlinux is looked for, and how many
#: directories at most: a --debug-dir of / must not walk the whole disk.
_SEARCH_DEPTH = 8
_SEARCH_DIRECTORIES = 20000


def _search_subfolders(top: str, names: set[str], build_id: str | None) -> list[str]:
    """
    Files below *top* named one of *names*, or ``.build-id``-style
    ``xx/yyyy.debug`` files of *build_id*; the shallowest first. Symbolic
    links to directories are not followed.
    """
    found: list[str] = []
    for seen, (directory, subdirs, files) in enumerate(os.walk(top), 1):
        depth = os.path.relpath(directory, top).count(os.sep)
        if depth >= _SEARCH_DEPTH or seen >= _SEARCH_DIRECTORIES:
            subdirs.clear()
        wanted = set(names)
        if build_id and os.path.basename(directory) == build_id[:2]:
            wanted.add(f"{build_id[2:]}.debug")
        found.extend(os.path.join(directory, name) for name in files if name in wanted)
    return sorted(found, key=lambda path: (path.count(os.sep), path))


def looks_like_vmlinux(path: str) -> bool:
    """Whether *path* is an ELF executable (a vmlinux), not a core dump."""
    try:
        with open(path, "rb") as f:
            header = f.read(18)
    except OSError:
        return False
    if len(header) < 18 or header[:4] != b"\x7fELF":
        return False
    e_type = int.from_bytes(header[16:18], "little" if header[5] == 1 else "big")
    return e_type == 2  # ET_EXEC


def _check_debug_dirs(debug_dirs: Sequence[str]) -> None:
    """Refuse a ``--debug-dir`` that is neither a file nor a directory."""
    for d in debug_dirs:
        if not os.path.isfile(d) and not os.path.isdir(d):
            raise InputFileError(f"cannot read debug directory {show_path(d)}: No such directory")


def _candidates(info: DumpInfo, debug_dirs: Sequence[str], root: str) -> Iterator[str]:
    """
    Where the dump's vmlinux may be, most likely first, each once. Lazily:
    a debug directory's subfolders are walked only when the names right in
    it are not the vmlinux (a fleet finds its kernel there dump after dump).
    """
    rel = info.osrelease
    seen: set[str] = set()

    def each(paths: Iterable[str]) -> Iterator[str]:
        for path in paths:
            if path not in seen:
                seen.add(path)
                yield path

    for d in debug_dirs:
        if os.path.isfile(d):
            yield from each([d])  # a vmlinux named directly
            continue
        direct = [os.path.join(d, f"vmlinux-{rel}")] if rel else []
        direct.append(os.path.join(d, "vmlinux"))
        if rel:
            direct.extend(os.path.join(d, p.lstrip("/")) for p in standard_vmlinux_paths(rel))
        if info.build_id:
            direct.append(os.path.join(d, _build_id_path(info.build_id)))
            direct.append(os.path.join(d, "usr/lib/debug", _build_id_path(info.build_id)))
        yield from each(direct)
        names = {"vmlinux", *([f"vmlinux-{rel}"] if rel else [])}
        yield from each(_search_subfolders(d, names, info.build_id))
    yield from each(beside_dump(info))
    if rel:
        yield from each(os.path.join(root, p.lstrip("/")) for p in standard_vmlinux_paths(rel))
    if info.build_id:
        yield from each([os.path.join(root, "usr/lib/debug", _build_id_path(info.build_id))])


def beside_dump(info: DumpInfo) -> list[str]:
    """
    Where a vmlinux copied next to the dump would be, without ``--debug-dir``:
    in the dump's own folder, ``vmlinux-REL``, ``vmlinux``, and by build ID
    (``ID``, ``ID.debug``, ``vmlinux-ID``, ``.build-id/xx/yyyy.debug``), as
    people hand a dump over with its kernel. Only these names: the folder is
    not walked (it may be a large one, the current directory).
    """
    folder = os.path.dirname(os.path.abspath(info.path))
    names = [f"vmlinux-{info.osrelease}"] if info.osrelease else []
    names.append("vmlinux")
    if info.build_id:
        build_id = info.build_id
        names += [build_id, f"{build_id}.debug", f"vmlinux-{build_id}", _build_id_path(build_id)]
    return [os.path.join(folder, name) for name in names]


def debuginfo_package_hint(osrelease: str | None) -> str:
    """
    Name the distribution package that ships the vmlinux for ``osrelease``.

    >>> debuginfo_package_hint("6.1.0-18-amd64")
    'install linux-image-6.1.0-18-amd64-dbg (Debian)'
    """
    if not osrelease:
        return "install the kernel debug-info package of the crashed kernel"
    debian = f"linux-image-{osrelease}-dbg (Debian)"
    ubuntu = f"linux-image-unsigned-{osrelease}-dbgsym (Ubuntu)"
    redhat = f"kernel-debuginfo-{osrelease} (debuginfo-install kernel-{osrelease})"
    if re.search(r"\.(el\d+|fc\d+|amzn\d+|an\d+|oc\d+)", osrelease):
        return f"install {redhat}"
    if re.search(r"-(amd64|arm64|686(-pae)?|cloud-\w+|rt-\w+|s390x|ppc64el|armmp)$", osrelease):
        return f"install {debian}"
    if re.search(
        r"-(generic|lowlatency|aws|azure|gcp|gke|kvm|oracle|ibm|raspi|virtual)(-\w+)?$", osrelease
    ):
        return f"install {ubuntu}"
    return f"install {debian}, {ubuntu} or {redhat}"


def system_root() -> str:
    """
    The root under which installed debuginfo packages are looked for: ``/``,
    or ``$DUMPMINER_DEBUGINFO_ROOT`` (so that a test can hide the machine's
    own vmlinux files).
    """
    return os.environ.get("DUMPMINER_DEBUGINFO_ROOT") or "/"


#: The vmlinux found for a build ID in these debug directories, and its file's
#: stamp: a process that opens dump after dump of one kernel (a fleet worker)
#: searches once, and searches again if that file changed.
_FOUND: dict[tuple[str, tuple[str, ...], str], tuple[str, tuple[int, int, int]]] = {}


def _file_stamp(path: str) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of the file at *path*, or None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def find_vmlinux(info: DumpInfo, debug_dirs: Sequence[str] = (), root: str | None = None) -> str:
    """
    Find a vmlinux with debug info that matches a dump.

    Each directory in ``debug_dirs`` is searched first (``vmlinux-REL``,
    ``vmlinux``, the standard paths below it, and the ``.build-id/xx/yyyy.debug``
    layout; then the same names in its subfolders, up to 8 levels down); then
    the dump's own folder (:func:`beside_dump`); then the standard places
    under ``root``.  A candidate is accepted
    only if it has ``.debug_info`` and, when the dump records a build ID, the
    same build ID.

    :param info: The dump, from :func:`~dumpminer.dump.info.read_dump_info`.
    :param debug_dirs: Directories (or vmlinux files) given with --debug-dir.
    :param root: Root of the file system searched for installed packages
        (default: :func:`system_root`).
    :raises InputFileError: if a directory in ``debug_dirs`` does not exist.
    :raises DebugInfoError: if no candidate is acceptable.
    """
    root = system_root() if root is None else root
    _check_debug_dirs(debug_dirs)
    key = (info.build_id or "", tuple(debug_dirs), root)
    remembered = _FOUND.get(key)
    if remembered and _file_stamp(remembered[0]) == remembered[1]:
        return remembered[0]
    mismatched: list[str] = []
    stripped: list[str] = []
    for path in _candidates(info, debug_dirs, root):
        if not os.path.isfile(path):
            continue
        try:
            build_id = vmlinux_build_id(path)
            has_debug = vmlinux_has_debuginfo(path)
        except (InputFileError, DebugInfoError):
            continue  # unreadable or not ELF: keep looking
        if info.build_id and build_id != info.build_id:
            mismatched.append(f"{show_path(path)} (build ID {build_id or 'none'})")
            continue
        if not has_debug:
            stripped.append(path)
            continue
        stamp = _file_stamp(path)
        if info.build_id and stamp is not None:
            _FOUND[key] = (path, stamp)
        return path
    rel = info.osrelease or "an unknown release"
    what = f"no vmlinux with debug info for kernel {rel}"
    if info.build_id:
        what += f" (BUILD-ID {info.build_id})"
    notes = []
    if mismatched:
        notes.append(f"other or no build ID: {', '.join(mismatched)}")
    if stripped:
        notes.append(f"no .debug_info: {', '.join(map(show_path, stripped))}")
    found = f" (rejected {'; '.join(notes)})" if notes else ""
    raise DebugInfoError(
        f"{what} found{found}; {debuginfo_package_hint(info.osrelease)} "
        "or pass its directory with --debug-dir"
    )


def check_vmlinux_matches(info: DumpInfo, vmlinux: str | os.PathLike[str]) -> None:
    """
    Check that ``vmlinux`` is the dump's kernel and has debug info.

    :raises InputFileError: if ``vmlinux`` is missing or unreadable.
    :raises DebugInfoError: if it is not ELF, has no ``.debug_info``, or its
        build ID differs from the dump's ``BUILD-ID`` (when both are known).
    """
    spath = show_path(os.fsdecode(vmlinux))
    build_id = vmlinux_build_id(vmlinux)
    if info.build_id and build_id and build_id != info.build_id:
        raise DebugInfoError(
            f"vmlinux build ID {build_id} does not match the dump's BUILD-ID "
            f"{info.build_id} (dump OSRELEASE {info.osrelease or 'unknown'}): {spath}"
        )
    if not vmlinux_has_debuginfo(vmlinux):
        raise DebugInfoError(
            f"{spath} has no .debug_info section (a stripped image?); "
            f"{debuginfo_package_hint(info.osrelease)}"
        )


def debuginfod_urls() -> list[str]:
    """The debuginfod servers named in ``$DEBUGINFOD_URLS`` (space-separated)."""
    return os.environ.get("DEBUGINFOD_URLS", "").split()


def _debuginfod_cache() -> str:
    """
    Where fetched files are kept: elfutils' client cache
    (``$DEBUGINFOD_CACHE_PATH``, else ``$XDG_CACHE_HOME/debuginfod_client``),
    in its layout, so both clients share what either fetched.
    """
    given = os.environ.get("DEBUGINFOD_CACHE_PATH")
    if given:
        return given
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "debuginfod_client")


#: Seconds a debuginfod server may take to start answering (elfutils' default).
DEBUGINFOD_TIMEOUT = 90


def _debuginfod_timeout() -> float:
    try:
        return float(os.environ.get("DEBUGINFOD_TIMEOUT", DEBUGINFOD_TIMEOUT))
    except ValueError:
        return DEBUGINFOD_TIMEOUT


def _download(url: str, target: str) -> None:
    """Fetch *url* into *target* whole, or leave nothing behind."""
    import urllib.request  # here: it imports ssl and http, which only this needs

    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    with urllib.request.urlopen(url, timeout=_debuginfod_timeout()) as answer:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".dumpminer-")
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := answer.read(1 << 20):
                    out.write(chunk)
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise


def fetch_vmlinux(info: DumpInfo, urls: Sequence[str] | None = None) -> str:
    """
    Fetch the vmlinux with the dump's build ID from a debuginfod server
    (``GET /buildid/ID/debuginfo``) into the client cache, and return its
    path. A file cached before is used without asking. The file is checked
    as a found vmlinux is.

    :raises DebugInfoError: if the dump has no build ID, no server is named,
        or none has the file.
    """
    if not info.build_id:
        raise DebugInfoError("debuginfod needs the dump's BUILD-ID, and VMCOREINFO has none")
    servers = list(debuginfod_urls() if urls is None else urls)
    if not servers:
        raise DebugInfoError("debuginfod: DEBUGINFOD_URLS names no server")
    import urllib.error  # here: see _download

    target = os.path.join(_debuginfod_cache(), info.build_id, "debuginfo")
    failures = []
    if not os.path.isfile(target):
        for server in servers:
            url = f"{server.rstrip('/')}/buildid/{info.build_id}/debuginfo"
            try:
                _download(url, target)
                break
            except urllib.error.HTTPError as e:
                failures.append(f"{show_path(server)}: HTTP {e.code}")
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                failures.append(f"{show_path(server)}: {reason}")
        else:
            raise DebugInfoError(
                f"debuginfod has no vmlinux with build ID {info.build_id} ({'; '.join(failures)})"
            )
    check_vmlinux_matches(info, target)
    return target
