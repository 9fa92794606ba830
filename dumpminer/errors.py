"""
Errors that end a dumpminer run, each with its own exit code.

Every failure the user can cause (a wrong path, a vmlinux from another kernel,
a cache that does not exist) is raised as a :class:`DumpminerError` subclass.
The CLI prints its message on one line and exits with its ``exit_code``; the
codes are documented in docs/exit-codes.md and are a contract for scripts.
"""

from __future__ import annotations


class DumpminerError(Exception):
    """Base class: a failure explained in one line, with an exit code."""

    exit_code = 1


class UsageError(DumpminerError):
    """An option value is out of range or options contradict each other."""

    exit_code = 2


class InputFileError(DumpminerError):
    """A file named on the command line is missing or cannot be read."""

    exit_code = 3


class NotADumpError(DumpminerError):
    """The file is not a vmcore dumpminer can read, or its header is corrupt."""

    exit_code = 4


class ArchitectureError(DumpminerError):
    """The dump is of an architecture dumpminer does not support."""

    exit_code = 5


class DebugInfoError(DumpminerError):
    """No vmlinux with debuginfo was found, or it is not the dump's kernel."""

    exit_code = 6


class UnknownCacheError(DumpminerError):
    """No slab cache matches the name asked for."""

    exit_code = 7


class OutputError(DumpminerError):
    """The report could not be written where it was asked to go."""

    exit_code = 8


class KernelDataError(DumpminerError):
    """Kernel data that dumpminer needs before it can walk is unreadable."""

    exit_code = 9


class NoKernelTypesError(DumpminerError):
    """
    No vmlinux was found, and the dump cannot be read without one: it has no
    BTF in memory, no kallsyms in VMCOREINFO, or is older than Linux 6.0.
    """

    exit_code = 11


class UnsupportedKernelError(DumpminerError):
    """The kernel's slab allocator (SLAB, SLOB) or the installed drgn is not supported."""

    exit_code = 12


class SlabPagesFilteredError(DumpminerError):
    """The dump was filtered in a way that dropped slab pages: there is nothing to mine."""

    exit_code = 13


class IncompleteDumpError(DumpminerError):
    """
    A dump cut short where only a whole count will do (``diff``): a
    partial side would show growth or loss that is not there.
    """

    exit_code = 10  # EXIT_INCOMPLETE_DUMP, as mine's partial report


def first_line(error: BaseException) -> str:
    """The first line of an error's message, or its type when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def show_path(path: str) -> str:
    """A path for a one-line message: quoted when it holds control characters."""
    return repr(path) if any(c < " " for c in path) else path


#: Exit code after a report that covers only part of the cache because the
#: dump lacks kernel data (its page array, cut short): the report was written,
#: ``"partial": true`` with the reason in ``progress``.
EXIT_INCOMPLETE_DUMP = 10
#: ``fleet``: the fleet report was written, but some dumps failed (listed in it).
EXIT_FLEET_FAILURES = 14
#: Exit code after SIGINT: the partial report was written (128 + SIGINT).
EXIT_INTERRUPTED = 130
#: Exit code after SIGTERM: the partial report was written (128 + SIGTERM).
EXIT_TERMINATED = 143
