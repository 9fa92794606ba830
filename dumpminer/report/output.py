"""
Writing a report where ``-o`` says: the whole report or nothing.

A report is written to a temporary file in the target's directory and
renamed over the target, so that neither a reader nor a run that fails half
way ever sees half a report. That is right only for what a rename may
replace: a regular file, or a path that does not exist yet. ``-o`` may also
name

- a character device (``/dev/null``, ``/dev/stdout``, a terminal): a rename
  would turn the device node into a regular file (as root), or fail (as
  anyone else: ``/dev`` is not theirs), so the report is written straight
  through, as the shell's ``>`` does;
- a FIFO: its reader waits on the FIFO, not on a file renamed over it, so
  the report is written straight through (the write waits for a reader);
- a symbolic link: the report goes to the link's target, written as the
  target's type asks, and the link stays a link.

Block devices, sockets and directories are refused. Every failure is an
:class:`~dumpminer.errors.OutputError` (exit code 8), checked once before a
long walk (:func:`check_output`) and again when writing (:func:`write_report`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

from dumpminer.errors import OutputError, show_path


def output_target(path: str) -> str:
    """The file *path* names once every symbolic link is followed."""
    return os.path.realpath(path)


def _mode(target: str) -> int | None:
    """The ``st_mode`` of *target*, or None when it does not exist."""
    try:
        return os.stat(target).st_mode
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OutputError(f"cannot write {target}: {e.strerror}") from e


def _written_through(mode: int | None) -> bool:
    """Whether a file of *mode* is written in place instead of replaced."""
    return mode is not None and (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode))


def check_output(path: str) -> None:
    """
    Refuse an output *path* that cannot be written, before the walk that
    produces the report, not after it.
    """
    shown = show_path(path)
    target = output_target(path)
    mode = _mode(target)
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputError(f"cannot write {shown}: it is a directory")
    if _written_through(mode):
        if not os.access(target, os.W_OK):
            raise OutputError(f"cannot write {shown}: Permission denied")
        return
    if mode is not None and not stat.S_ISREG(mode):
        raise OutputError(f"cannot write {shown}: not a regular file, device or FIFO")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {shown}: {directory} is not a writable directory")


def write_report(path: str, text: str) -> None:
    """
    Write *text* to *path*: atomically over a regular file or a new path,
    straight through to a character device or FIFO, to the target of a
    symbolic link.
    """
    target = output_target(path)
    mode = _mode(target)
    if not _written_through(mode):
        write_atomically(target, text, shown=path)
        return
    try:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise OutputError(f"cannot write {show_path(path)}: {e.strerror}") from e


def write_atomically(path: str, text: str, shown: str | None = None) -> None:
    """
    Write *text* to the regular file *path* through a temporary file in the
    same directory and a rename, so that *path* is either the old file or
    the whole new one. A file replaced keeps its permission bits; a new one
    gets those of the umask. *shown* is the path named in errors.
    """
    shown = show_path(path if shown is None else shown)
    directory = os.path.dirname(os.path.abspath(path))
    mode = _mode(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dumpminer-", dir=directory)
    except OSError as e:
        raise OutputError(f"cannot write {shown}: {e.strerror}") from e
    try:
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        else:
            os.chmod(tmp, stat.S_IMODE(mode))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        # Also on KeyboardInterrupt: never leave the temporary file behind.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {shown}: {e.strerror}") from e
        raise
