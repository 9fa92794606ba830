"""
The ``dumpminer`` console script and ``python -m dumpminer``: Ctrl-C at any
time ends the run with one line and exit code 130, never a traceback.

:mod:`dumpminer.cli` imports drgn, numpy and the rest, which takes most of a
second; a Ctrl-C in that time arrives before :func:`dumpminer.cli.main` can
catch it. This module imports nothing heavy itself (nor does the package,
see :mod:`dumpminer`), so it can.

The console script ends in :func:`run`: once the report is written, the
interpreter is not torn down object by object (the drgn program with its
DWARF index, the walk's arrays: about 0.06 s of a one-second run on the
``big`` sample), the process just exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from typing import NoReturn

from dumpminer.errors import EXIT_INTERRUPTED  # errors imports nothing: safe this early

#: drgn plugins that only add commands to drgn's REPL: drgn's own, crash's,
#: and dumpminer's ``%dumpminer``. drgn imports every plugin when the first
#: program opens a dump, which for these takes about 0.04 s of a one-second
#: run, and the command line runs none of them. Other plugins still load.
COMMAND_PLUGINS = ("builtin_commands", "crash_commands", "dumpminer")


def skip_command_plugins() -> None:
    """Add :data:`COMMAND_PLUGINS` to ``DRGN_DISABLE_PLUGINS`` for this process."""
    disabled = os.environ.get("DRGN_DISABLE_PLUGINS", "")
    if disabled != "*":
        os.environ["DRGN_DISABLE_PLUGINS"] = ",".join(filter(None, [disabled, *COMMAND_PLUGINS]))


def main() -> int:
    """Import the command line, quietly giving up on Ctrl-C, and run it."""
    skip_command_plugins()
    try:
        from dumpminer.cli import main as cli_main
    except KeyboardInterrupt:
        print("dumpminer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return cli_main()


def run() -> NoReturn:
    """
    The ``dumpminer`` console script: :func:`main`, then exit at once. The
    exit handlers run and the standard streams are flushed first, as on a
    normal exit; what is skipped is freeing memory the kernel reclaims
    anyway. Every file the command writes is closed (and renamed into
    place) inside :func:`main`.
    """
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed pipe or stream: there is nothing more to say there.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
