"""
dumpminer as a drgn command: ``%dumpminer`` in drgn's REPL.

drgn 0.3.0 imports the modules named by the ``drgn.plugins`` entry point when
it creates a program; importing this one registers the command with
:mod:`drgn.commands`. The command mines the open program as ``dumpminer
mine`` does and prints the same report::

    $ drgn -c vmcore -s vmlinux
    >>> %dumpminer --cache kmalloc-32 --top 10
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from drgn import Program
from drgn.commands import argument, command

# Every drgn session of anyone who installed dumpminer imports this module:
# it imports drgn's own command machinery and nothing of dumpminer's (numpy,
# the C extensions), which waits until the command runs.
if TYPE_CHECKING:
    from dumpminer.report.model import Report

#: ``--min-length``'s default, as ``dumpminer mine`` has it (dumpminer.extract.fragments).
DEFAULT_MIN_LENGTH = 3


def _dump_path(prog: Program) -> str | None:
    """The core dump the program was opened from, when drgn knows it."""
    path = getattr(prog, "core_dump_path", None)
    return path if isinstance(path, str) else None


def _describe_dump(report: Report, prog: Program) -> Report:
    """*report* naming its dump as ``dumpminer mine`` does: its path and header facts."""
    from dataclasses import replace

    from dumpminer.dump.info import read_dump_info
    from dumpminer.errors import DumpminerError

    path = _dump_path(prog)
    if path is None:
        return report
    try:
        info = read_dump_info(path, truncated_data_ok=True)
    except DumpminerError:
        return replace(report, dump=replace(report.dump, path=path))
    facts = replace(report.dump, path=path, format=info.format, build_id=info.build_id)
    return replace(report, dump=facts)


@command(
    name="dumpminer",
    description="mine slab caches for the strings that leaked (dumpminer mine)",
    arguments=(
        argument("--cache", help="cache name or glob; default: the largest caches"),
        argument("--caches-top", type=int, default=3, metavar="K", help="without --cache"),
        argument("--min-length", type=int, default=DEFAULT_MIN_LENGTH, metavar="N"),
        argument("--context", type=int, default=0, metavar="BYTES"),
        argument("--top", type=int, metavar="N", help="rows to report"),
        argument("--format", choices=("table", "json", "csv", "markdown"), default="table"),
        # drgn's command parsers have no --help of their own.
        argument("-h", "--help", action="store_true", help="show this help"),
    ),
)
def _cmd_dumpminer(prog: Program, name: str, args: argparse.Namespace, **kwargs: Any) -> None:
    """Mine the program's caches and print the report, as ``dumpminer mine`` does."""
    parser = kwargs.get("parser")
    if args.help:
        if isinstance(parser, argparse.ArgumentParser):
            sys.stdout.write(parser.format_help())
        return
    from dumpminer.errors import DumpminerError
    from dumpminer.options import MineOptions
    from dumpminer.pipeline import mine
    from dumpminer.report.escape import terminal_escape
    from dumpminer.report.render import render, render_many
    from dumpminer.slub.slabinfo import slab_info

    try:
        options = MineOptions(before=args.context, after=args.context, min_length=args.min_length)
        if args.cache is not None:
            names = [args.cache]
        else:
            names = [line.usage.name for line in slab_info(prog).caches[: args.caches_top]]
        reports = [_describe_dump(mine(prog, cache, options), prog) for cache in names]
    except DumpminerError as e:
        sys.stderr.write(f"dumpminer: {terminal_escape(str(e))}\n")
        return
    if args.cache is not None:
        sys.stdout.write(render(reports[0], args.format, args.top))
    else:
        sys.stdout.write(render_many(reports, args.format, args.top))
