"""
The ``dumpminer`` console script and ``python -m dumpminer``: Ctrl-C at any
time ends the run with one line and exit code 130, never a traceback.

:mod:`dumpminer.cli` imports drgn, numpy and the rest, which takes most of a
second; a Ctrl-C in that time arrives before :func:`dumpminer.cli.main` can
catch it. This module imports nothing heavy itself (nor does the package,
see :mod:`dumpminer`), so it can.
"""

from __future__ import annotations

import sys

from dumpminer.errors import EXIT_INTERRUPTED  # errors imports nothing: safe this early


def main() -> int:
    """Import the command line, quietly giving up on Ctrl-C, and run it."""
    try:
        from dumpminer.cli import main as cli_main
    except KeyboardInterrupt:
        print("dumpminer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
