"""
The ``dumpminer`` command: argument parsing and exit codes, nothing more.

Every failure the user can cause ends in one line on stderr and the exit code
of its :class:`~dumpminer.errors.DumpminerError`; see docs/exit-codes.md.
Only the report goes to stdout. The console script starts in
:mod:`dumpminer.__main__`, which imports this module only once Ctrl-C can be
answered quietly. What only one command uses (``diff``'s and ``caches``'
modules) is imported by that command, not at every start-up.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from types import FrameType
from typing import Any, NoReturn

from drgn import FaultError

from dumpminer.clustering.tally import DEFAULT_MAX_FRAGMENTS
from dumpminer.dump.debuginfo import looks_like_vmlinux
from dumpminer.dump.dumptime import dump_time, shown_time, time_facts
from dumpminer.dump.info import dump_info_dict, read_dump_info
from dumpminer.dump.open import Dump, open_dump
from dumpminer.errors import (
    EXIT_FLEET_FAILURES,
    EXIT_INCOMPLETE_DUMP,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    DumpminerError,
    IncompleteDumpError,
    KernelDataError,
    NotADumpError,
    UsageError,
    first_line,
    show_path,
)
from dumpminer.extract.fragments import DEFAULT_MIN_LENGTH
from dumpminer.interrupts import set_handler, signals_noted
from dumpminer.options import MineOptions
from dumpminer.pipeline import attach_example_bytes, mine
from dumpminer.report.escape import terminal_escape
from dumpminer.report.jsontext import dumps as json_text
from dumpminer.report.model import DEFAULT_NOISE_FLOOR, DumpTime, Report
from dumpminer.report.output import check_output, write_report
from dumpminer.report.render import FORMATS, render, render_many
from dumpminer.slub.sampling import SampleSpec, parse_sample


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _HelpFormatter(argparse.HelpFormatter):
    """Help that names each option's default, when it has one worth naming."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet: tuple[object, ...] = (None, False, [], argparse.SUPPRESS)
        # A flag (--no-attribution) takes no value: "(default: True)" would
        # read as if the flag were on by default.
        flag = action.nargs == 0
        if (
            action.option_strings
            and not flag
            and "%(default)" not in text
            and action.default not in quiet
        ):
            text += " (default: %(default)s)"
        return text


def _non_negative(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _version() -> str:
    """dumpminer's version, and drgn's and Python's, for bug reports."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import drgn

    try:
        mine_version = version("dumpminer")
    except PackageNotFoundError:
        mine_version = "(not installed)"
    return f"dumpminer {mine_version} (drgn {drgn.__version__}, Python {platform.python_version()})"


class _VersionAction(argparse.Action):
    """--version: dumpminer's, drgn's and Python's versions, then exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.help = "print the versions of dumpminer, drgn and Python, and exit"

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(_version())
        parser.exit()


def _progress_options(parser: argparse.ArgumentParser, has_bar: bool = True) -> None:
    """--progress and --quiet: a bar only on a terminal, unless asked."""
    group = parser.add_mutually_exclusive_group()
    if has_bar:
        group.add_argument(
            "--progress",
            action="store_true",
            help="show the progress bar even when stderr is not a terminal",
        )
        group.add_argument("--quiet", action="store_true", help="never show the progress bar")
    else:
        group.add_argument(
            "--quiet", action="store_true", help="no progress output (this command shows none)"
        )


def _debug_info_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vmlinux", help="vmlinux with debuginfo for the dump's kernel")
    parser.add_argument(
        "--debug-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="where to look for vmlinux, subfolders included (repeatable)",
    )


def _debuginfo_arguments(parser: argparse.ArgumentParser) -> None:
    """Where types and symbols may come from besides a vmlinux (docs/debuginfo.md)."""
    parser.add_argument(
        "--no-debuginfo",
        action="store_true",
        help="read types from the kernel's BTF and symbols from kallsyms, not a vmlinux",
    )
    parser.add_argument(
        "--debuginfod",
        action="store_true",
        help="fetch the vmlinux by build ID from $DEBUGINFOD_URLS (also on when it is set)",
    )


def _open(args: argparse.Namespace) -> Dump:
    """Open the dump as the arguments say; say on stderr when no vmlinux is used."""
    dump = open_dump(
        args.vmcore,
        args.vmlinux,
        args.debug_dir,
        use_vmlinux=not args.no_debuginfo,
        debuginfod=args.debuginfod or None,
    )
    if dump.note:
        print(f"dumpminer: {terminal_escape(dump.note)}", file=sys.stderr)
    return dump


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand."""
    parser = _Parser(
        prog="dumpminer",
        description="Mine kernel slab caches in a vmcore.",
        epilog="Exit codes: docs/exit-codes.md. The dump comes first, vmlinux with --vmlinux "
        "(crash takes VMLINUX VMCORE; dumpminer takes VMCORE --vmlinux VMLINUX).",
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_mine_parser(sub)
    _add_diff_parser(sub)
    _add_info_parser(sub)
    _add_caches_parser(sub)
    _add_fleet_parser(sub)
    return parser


def _add_mine_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``dumpminer mine``: the report of one dump's caches."""
    m = sub.add_parser(
        "mine",
        help="fragment frequency report of a cache's allocated objects",
        formatter_class=_HelpFormatter,
    )
    m.add_argument("vmcore", help="the dump: ELF, kdump-compressed or makedumpfile output")
    _debug_info_options(m)
    _debuginfo_arguments(m)
    m.add_argument(
        "--cache", help="cache name as in /proc/slabinfo, or a glob; default: the largest caches"
    )
    m.add_argument(
        "--caches-top", type=_non_negative, default=3, metavar="K", help="without --cache: mine K"
    )
    m.add_argument("--context", type=_non_negative, metavar="BYTES", help="bytes before and after")
    m.add_argument("--before", type=_non_negative, metavar="B", help="context bytes before objects")
    m.add_argument("--after", type=_non_negative, metavar="A", help="context bytes after objects")
    m.add_argument(
        "--min-length",
        type=_non_negative,
        default=DEFAULT_MIN_LENGTH,
        metavar="N",
        help="shortest printable run counted",
    )
    m.add_argument(
        "--top", type=_non_negative, metavar="N", help="rows to report (table: 25; others: all)"
    )
    m.add_argument("--format", choices=(*FORMATS, "html"), default="table", help="report format")
    m.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the report here: atomically over a file, straight to a device or FIFO",
    )
    _progress_options(m)
    pointers = m.add_mutually_exclusive_group()
    pointers.add_argument(
        "--mask-pointers",
        dest="mask_pointers",
        action="store_const",
        const=True,
        default=True,
        help="leave out runs of kernel-pointer bytes, as diff does (the default)",
    )
    pointers.add_argument(
        "--keep-pointers",
        dest="mask_pointers",
        action="store_const",
        const=False,
        help="count the printable low bytes of kernel pointers as text (rows may then be "
        "pointer bytes)",
    )
    m.add_argument(
        "--no-call-sites",
        dest="call_sites",
        action="store_false",
        help="do not read allocation tracks (slub_debug=U) for call sites",
    )
    m.add_argument(
        "--no-attribution",
        dest="attribution",
        action="store_false",
        help="skip pointer attribution (the 'points to' lines) and the shape groups of "
        "string-less objects",
    )
    m.add_argument(
        "--max-fragments",
        type=_non_negative,
        default=DEFAULT_MAX_FRAGMENTS,
        metavar="N",
        help="distinct fragments kept exactly before the rarest are dropped",
    )
    m.add_argument(
        "--sample",
        metavar="N|FRACTION",
        help="mine a random share of the slabs: a fraction (0.1) or about N objects",
    )
    m.add_argument(
        "--seed", type=_non_negative, help="seed of the --sample draw (default: 0, so runs repeat)"
    )
    m.add_argument(
        "--workers",
        type=_non_negative,
        metavar="N",
        help="processes, at most the CPUs usable (default: by cache size)",
    )


def _add_diff_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``dumpminer diff``: two dumps or reports compared."""
    d = sub.add_parser(
        "diff",
        help="what grew between two dumps (vmcores or JSON reports)",
        formatter_class=_HelpFormatter,
    )
    d.add_argument("old", help="the earlier dump, or a JSON report of mine")
    d.add_argument("new", help="the later dump, or a JSON report of mine")
    d.add_argument(
        "--vmlinux",
        action="append",
        default=[],
        help="vmlinux for both dumps, or given twice: OLD's then NEW's",
    )
    d.add_argument("--debug-dir", action="append", default=[], help="where to look for vmlinux")
    d.add_argument("--cache", help="cache name or glob; default: a JSON side's, else NEW's largest")
    d.add_argument(
        "--caches-top",
        type=_non_negative,
        default=3,
        metavar="K",
        help="without --cache: compare K",
    )
    d.add_argument("--context", type=_non_negative, metavar="BYTES", help="bytes before and after")
    d.add_argument("--before", type=_non_negative, metavar="B", help="context bytes before objects")
    d.add_argument("--after", type=_non_negative, metavar="A", help="context bytes after objects")
    d.add_argument(
        "--min-length",
        type=_non_negative,
        default=DEFAULT_MIN_LENGTH,
        metavar="N",
        help="shortest printable run counted (both sides alike)",
    )
    d.add_argument(
        "--max-fragments",
        type=_non_negative,
        default=DEFAULT_MAX_FRAGMENTS,
        metavar="N",
        help="distinct fragments kept exactly per side before the rarest are dropped",
    )
    d.add_argument(
        "--workers", type=_non_negative, metavar="N", help="processes per side (default: by size)"
    )
    d.add_argument(
        "--noise-floor",
        type=_non_negative,
        default=DEFAULT_NOISE_FLOOR,
        metavar="N",
        help="hide changes of at most N objects",
    )
    d.add_argument(
        "--keep-pointers", action="store_true", help="do not blank kernel addresses in objects"
    )
    d.add_argument("--top", type=_non_negative, metavar="N", help="rows per cache")
    d.add_argument("--format", choices=(*FORMATS, "html"), default="table", help="diff format")
    d.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the diff here: atomically over a file, straight to a device or FIFO",
    )
    _progress_options(d)


def _add_info_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``dumpminer info``: what a dump is, from its headers."""
    i = sub.add_parser(
        "info",
        help="what a dump is, from its headers, without debuginfo",
        formatter_class=_HelpFormatter,
    )
    i.add_argument("vmcore")
    i.add_argument("--vmlinux", help="with debuginfo: also read the kernel clock's time")
    i.add_argument("--format", choices=("table", "json"), default="table", help="output format")


def _add_caches_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``dumpminer caches``: every cache, like ``kmem -s``."""
    c = sub.add_parser(
        "caches",
        help="every slab cache, most memory first (like kmem -s)",
        formatter_class=_HelpFormatter,
    )
    c.add_argument("vmcore")
    _debug_info_options(c)
    _debuginfo_arguments(c)
    c.add_argument("--top", type=_non_negative, metavar="N", help="rows to list (default: all)")
    c.add_argument("--format", choices=FORMATS, default="table", help="listing format")
    c.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the listing here: atomically over a file, straight to a device or FIFO",
    )
    _progress_options(c, has_bar=False)


def _add_fleet_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    """``dumpminer fleet``: many dumps at once on Dask (docs/fleet.md)."""
    f = sub.add_parser(
        "fleet",
        help="mine many dumps at once on Dask: which dumps carry which template",
        formatter_class=_HelpFormatter,
    )
    f.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a dump, a folder searched for dumps (by header), or a file listing dumps",
    )
    _debug_info_options(f)
    _debuginfo_arguments(f)
    f.add_argument("--cache", help="cache name or glob; default: each dump's largest caches")
    f.add_argument(
        "--caches-top", type=_non_negative, default=3, metavar="K", help="without --cache: mine K"
    )
    f.add_argument("--context", type=_non_negative, metavar="BYTES", help="bytes before and after")
    f.add_argument("--before", type=_non_negative, metavar="B", help="context bytes before objects")
    f.add_argument("--after", type=_non_negative, metavar="A", help="context bytes after objects")
    f.add_argument("--min-length", type=_non_negative, default=DEFAULT_MIN_LENGTH, metavar="N")
    f.add_argument(
        "--max-fragments", type=_non_negative, default=DEFAULT_MAX_FRAGMENTS, metavar="N"
    )
    pointers = f.add_mutually_exclusive_group()
    pointers.add_argument("--mask-pointers", dest="mask_pointers", action="store_const", const=True)
    pointers.add_argument(
        "--keep-pointers", dest="mask_pointers", action="store_const", const=False
    )
    f.add_argument("--no-call-sites", dest="call_sites", action="store_false")
    f.add_argument("--no-attribution", dest="attribution", action="store_false")
    f.add_argument(
        "--out",
        metavar="DIR",
        default="dumpminer-fleet",
        help="where each dump's JSON report is written, named by the dump's identity",
    )
    f.add_argument("--force", action="store_true", help="mine again dumps whose report is current")
    f.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="an existing Dask cluster (default: $DASK_SCHEDULER_ADDRESS, else a local one)",
    )
    f.add_argument("--find", metavar="TEXT_OR_TEMPLATE", help="list the dumps that carry it")
    f.add_argument("--top", type=_non_negative, metavar="N", help="template rows to report")
    f.add_argument(
        "--format",
        choices=("table", "json", "csv", "markdown", "html"),
        default="table",
        help="fleet report format",
    )
    f.add_argument("-o", "--output", metavar="FILE", help="write the fleet report here")
    _progress_options(f)


def _context(args: argparse.Namespace) -> tuple[int, int]:
    if args.context is not None and (args.before is not None or args.after is not None):
        raise UsageError("--context sets both sides; do not combine it with --before/--after")
    if args.context is not None:
        return args.context, args.context
    return args.before or 0, args.after or 0


def _emit(text: str, path: str | None) -> None:
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_report(path, text)


def _show_progress(args: argparse.Namespace) -> bool:
    """A progress bar on a terminal's stderr, or when --progress asks for it."""
    return bool(args.progress) or (not args.quiet and sys.stderr.isatty())


def _sample(args: argparse.Namespace) -> SampleSpec | None:
    """
    --sample and --seed as a draw; None for exact mode. (A draw of every
    slab, such as --sample 1, is mined as the exact run: :func:`mine` says so.)
    """
    if args.sample is None:
        if args.seed is not None:
            raise UsageError("--seed chooses the draw of --sample; it needs --sample")
        return None
    return parse_sample(args.sample, args.seed or 0)


def _workers(requested: int | None) -> int | None:
    """--workers, capped at the CPUs this process may run on (with a warning)."""
    if not requested:
        return None
    cpus = len(os.sched_getaffinity(0))
    if requested > cpus:
        print(
            f"dumpminer: warning: --workers {requested} is more than the {cpus} CPUs "
            f"this process may use; using {cpus}",
            file=sys.stderr,
        )
        return cpus
    return requested


def _mine_options(args: argparse.Namespace) -> MineOptions:
    """The options that ``mine`` and ``diff`` share, checked."""
    before, after = _context(args)
    options = MineOptions(
        before=before,
        after=after,
        min_length=args.min_length,
        max_fragments=args.max_fragments,
        progress=_show_progress(args),
    )
    options.check()
    return options


def run_mine(args: argparse.Namespace) -> int:
    """``dumpminer mine``: open, mine, render, write."""
    # Every option is checked before the dump is opened, not after.
    options = _mine_options(args)
    if args.cache is None and args.caches_top < 1:
        raise UsageError("--caches-top must be at least 1")
    options = replace(
        options,
        sample=_sample(args),
        workers=_workers(args.workers),
        mask_pointers=args.mask_pointers,
        call_sites=args.call_sites,
        attribution=args.attribution,
    )
    if args.output is not None:
        check_output(args.output)
    dump = _open(args)
    if args.cache is not None:
        names = [args.cache]
    else:
        from dumpminer.slub.slabinfo import slab_info

        names = [line.usage.name for line in slab_info(dump.prog).caches[: args.caches_top]]
    taken = DumpTime(*dump_time(dump.info, dump.prog))
    reports: list[Report] = []
    for name in names:
        report = mine(dump.prog, name, options, dump=dump)
        report = replace(report, dump=replace(report.dump, taken=taken))
        if args.format == "html":
            report = attach_example_bytes(report, dump.prog)
        reports.append(report)
        if _interrupted(report):
            break
    # The report of an interrupted walk is what the user waits for: a
    # second Ctrl-C (or SIGTERM) while it is rendered and written is noted,
    # not obeyed, so the file is whole.
    with signals_noted() as noted:
        if args.cache is not None:
            text = render(reports[0], args.format, args.top)
        else:
            text = render_many(reports, args.format, args.top)
        _emit(text, args.output)
    late = [sig for report in reports for sig in report.late_signals] + noted
    if _interrupted(reports[-1]) or late:
        terminated = _TERMINATED or late[-1:] == [signal.SIGTERM]
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    if any(report.partial for report in reports):
        return EXIT_INCOMPLETE_DUMP  # the dump lacks what the rest needs
    return 0


def _interrupted(report: Report) -> bool:
    """Whether a signal, not the dump, cut *report* short."""
    return report.progress.interrupted is not None


_TERMINATED = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops a walk as Ctrl-C does; the exit code tells them apart."""
    global _TERMINATED
    _TERMINATED = True
    raise KeyboardInterrupt


def _info_value(key: str, value: object, facts: dict[str, Any]) -> str:
    """
    A fact of ``info`` for people: None said in words, times with their
    UTC date (ISO 8601), and what ``filtered`` and ``dump_level`` mean
    when they seem to disagree (QEMU writes dump level 1 and leaves out nothing).
    """
    if value is None:
        return "not recorded in this dump"
    if key in ("crash_time", "time") and isinstance(value, int):
        return shown_time(value)
    if key == "filtered" and facts["format"] != "elf":
        return (
            "True (the page bitmaps differ: pages were left out)"
            if value
            else "False (the page bitmaps are equal: no page was left out)"
        )
    if key == "dump_level" and not facts["filtered"] and value:
        return f"{value} (the header's word; no page was left out, see filtered)"
    return str(value)


def run_info(args: argparse.Namespace) -> int:
    """
    ``dumpminer info``: the dump's header facts, no debuginfo needed. A
    copy cut short is said after the facts, one line, exit 10.
    """
    info = read_dump_info(args.vmcore, truncated_data_ok=True)
    facts = dump_info_dict(info)
    prog = None
    if args.vmlinux is not None:
        try:
            prog = open_dump(args.vmcore, args.vmlinux).prog
        except NotADumpError:
            if info.cut_short is None:
                raise
            # Cut before the kernel's page tables: the facts and the cut are still said.
    facts.update(time_facts(info, prog))
    facts["vmcoreinfo"] = facts.pop("vmcoreinfo")
    if args.format == "json":
        _emit(json_text(facts) + "\n", None)
    else:
        lines = [
            f"{key:15} {_info_value(key, value, facts)}"
            for key, value in facts.items()
            if key not in ("schema", "vmcoreinfo", "time_utc", "cut_short")
        ]
        if info.cut_short is not None:
            lines.append(f"{'cut_short':15} {info.cut_short}")
        _emit("\n".join(terminal_escape(line) for line in lines) + "\n", None)
    if info.cut_short is not None:
        raise IncompleteDumpError(
            f"{show_path(args.vmcore)} is cut short: {info.cut_short}; mine reads what is "
            "left (a partial report, exit 10) or cannot open it (exit 4)"
        )
    return 0


def run_diff(args: argparse.Namespace) -> int:
    """``dumpminer diff``: read or mine both sides, compare, render, write."""
    from dumpminer.diff.compare import diff_paths
    from dumpminer.diff.render import render_diff

    options = _mine_options(args)
    if len(args.vmlinux) > 2:
        raise UsageError("--vmlinux is given once (both dumps) or twice (OLD's, then NEW's)")
    libs = ([*args.vmlinux, None, None])[:2] if len(args.vmlinux) != 1 else args.vmlinux * 2
    if args.cache is None and args.caches_top < 1:
        raise UsageError("--caches-top must be at least 1")
    if args.output is not None:
        check_output(args.output)
    # Kernel pointers are blanked unless kept: KASLR must not show as growth.
    options = replace(
        options,
        workers=args.workers or None,
        mask_pointers=not args.keep_pointers,
        attribution=False,  # diff compares clusters only
    )
    result = diff_paths(
        args.old,
        args.new,
        (libs[0], libs[1]),
        args.debug_dir,
        args.cache,
        args.caches_top,
        options,
        args.noise_floor,
        examples=args.format == "html",
    )
    with signals_noted() as noted:
        _emit(render_diff(result, args.format, args.top), args.output)
    if noted:
        return EXIT_TERMINATED if noted[-1] == signal.SIGTERM else EXIT_INTERRUPTED
    return 0


def run_fleet(args: argparse.Namespace) -> int:
    """``dumpminer fleet``: every dump mined on Dask, one fleet report."""
    from dumpminer.fleet import MineSettings, fleet
    from dumpminer.fleet.progress import DumpBar
    from dumpminer.fleet.render import render_fleet

    options = replace(
        _mine_options(args),
        mask_pointers=args.mask_pointers is not False,
        call_sites=args.call_sites,
        attribution=args.attribution,
    )
    if args.cache is None and args.caches_top < 1:
        raise UsageError("--caches-top must be at least 1")
    if args.vmlinux is not None and args.no_debuginfo:
        raise UsageError("--vmlinux and --no-debuginfo contradict each other")
    if args.output is not None:
        check_output(args.output)
    settings = MineSettings(
        cache=args.cache,
        caches_top=args.caches_top,
        options=options,
        vmlinux=None if args.vmlinux is None else os.path.abspath(args.vmlinux),
        debug_dirs=tuple(os.path.abspath(d) for d in args.debug_dir),
        use_vmlinux=not args.no_debuginfo,
        debuginfod=args.debuginfod or None,
    )

    def dashboard(link: str) -> None:
        print(f"dumpminer: Dask dashboard at {terminal_escape(link)}", file=sys.stderr)

    report = fleet(
        args.paths,
        out=args.out,
        settings=settings,
        scheduler=args.scheduler,
        force=args.force,
        find=args.find,
        progress=DumpBar() if _show_progress(args) else None,
        on_dashboard=dashboard,
    )
    with signals_noted() as noted:
        _emit(render_fleet(report, args.format, args.top), args.output)
    if noted:
        return EXIT_TERMINATED if noted[-1] == signal.SIGTERM else EXIT_INTERRUPTED
    return EXIT_FLEET_FAILURES if report.failed else 0


def run_caches(args: argparse.Namespace) -> int:
    """``dumpminer caches``: every cache's counts, most memory first."""
    from dumpminer.report.slabinfo import render_slab_info
    from dumpminer.slub.slabinfo import slab_info

    if args.output is not None:
        check_output(args.output)
    dump = _open(args)
    _emit(render_slab_info(slab_info(dump.prog), args.format, args.top), args.output)
    return 0


def _crash_order_hint(words: list[str]) -> str:
    """
    When the file given as VMCORE is a vmlinux, the arguments were likely
    given in crash's order (``crash VMLINUX VMCORE``): say dumpminer's.
    """
    try:
        args, _ = build_parser().parse_known_args(words)
    except (UsageError, SystemExit):
        return ""
    vmcore = getattr(args, "vmcore", None)
    if vmcore is None or not looks_like_vmlinux(vmcore):
        return ""
    if args.command == "info":
        return f"; {vmcore} is a vmlinux (a kernel), not a dump"
    return (
        f"; {vmcore} is a vmlinux: dumpminer takes the dump first and vmlinux with "
        f"--vmlinux (dumpminer {args.command} VMCORE --vmlinux VMLINUX), "
        "not crash's order VMLINUX VMCORE"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dumpminer`` console script."""
    global _TERMINATED
    _TERMINATED = False
    if not os.environ.get("DUMPMINER_DEBUG"):
        # drgn warns about kernel modules it cannot find; dumpminer needs only
        # vmlinux, and stderr is for dumpminer's one-line messages.
        logging.getLogger("drgn").setLevel(logging.ERROR)
    previous = set_handler(signal.SIGTERM, _on_sigterm)
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(words)
        commands = {
            "mine": run_mine,
            "caches": run_caches,
            "info": run_info,
            "diff": run_diff,
            "fleet": run_fleet,
        }
        return commands[args.command](args)
    except DumpminerError as e:
        hint = _crash_order_hint(words) if isinstance(e, UsageError | NotADumpError) else ""
        print(f"dumpminer: {terminal_escape(str(e) + hint)}", file=sys.stderr)
        return e.exit_code
    except FaultError as e:
        # Memory the walk itself cannot read is counted in the report; a
        # fault that escapes to here was in what the walk needs first (the
        # cache list, a struct kmem_cache, per-CPU data).
        print(
            "dumpminer: kernel data needed before the walk is unreadable: "
            f"{terminal_escape(first_line(e))}",
            file=sys.stderr,
        )
        return KernelDataError.exit_code
    except KeyboardInterrupt:
        print("dumpminer: interrupted", file=sys.stderr)
        return EXIT_TERMINATED if _TERMINATED else EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as e:  # A bug: still one line, with a way to see more.
        if os.environ.get("DUMPMINER_DEBUG"):
            raise
        print(
            f"dumpminer: internal error: {type(e).__name__}: {terminal_escape(first_line(e))} "
            "(set DUMPMINER_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        set_handler(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
