"""
The kernel's release, read once and compared in one way.

dumpminer detects kernel structures rather than versions wherever a structure
tells (a member that exists or not, a type that exists or not). Where only the
release tells (a format whose layout no type shows), the comparison goes
through :func:`kernel_version`, so that every release string (``6.12.117+deb12-amd64``,
``5.14.0-427.el9.x86_64``, ``4.18.0-553.el8_10.x86_64``) parses alike, and a
string that does not parse compares below every kernel.
"""

from __future__ import annotations

import re

from drgn import Program

__all__ = ["kernel_release", "kernel_version"]

_VERSION = re.compile(r"(\d+)\.(\d+)")


def kernel_version(release: str | None) -> tuple[int, int]:
    """``(major, minor)`` of a kernel release; ``(0, 0)`` when it does not parse."""
    match = _VERSION.match(release or "")
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def kernel_release(prog: Program) -> str:
    """The running kernel's release (``UTS_RELEASE``), as ``uname -r`` prints it."""
    return str(prog["UTS_RELEASE"].string_().decode(errors="replace"))
