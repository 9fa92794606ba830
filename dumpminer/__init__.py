"""
dumpminer: mine a slab cache in a vmcore for the strings that leaked.

From a script or Python's REPL (QEMU's kdump files need the platform that
:func:`open_dump` gives drgn; ``drgn -c`` alone cannot open them)::

    import dumpminer
    dump = dumpminer.open_dump("kdump.vmcore", "vmlinux-6.1.0-28-cloud-amd64")
    report = dumpminer.mine(dump.prog, "kmalloc-32", dump=dump)
    print(dumpminer.render(report, "table"))

With a drgn program opened some other way, ``dumpminer.mine(prog, ...)``.
Many dumps at once, on Dask (docs/fleet.md)::

    fleet = dumpminer.fleet(["/var/crash"], out="reports", client=None)

.. note::
    The API is imported on first use, not with the package: ``dumpminer``
    itself imports nothing heavy, so that the command line can answer a
    Ctrl-C during its start-up (drgn and numpy take most of a second to
    import) without a traceback. See :mod:`dumpminer.__main__`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dumpminer.analysis.callsites import CallSiteReport
    from dumpminer.dump.open import Dump, open_dump
    from dumpminer.fleet import FleetReport, fleet
    from dumpminer.options import MineOptions
    from dumpminer.pipeline import mine
    from dumpminer.report.model import Report
    from dumpminer.report.render import render

__all__ = [
    "CallSiteReport",
    "Dump",
    "FleetReport",
    "MineOptions",
    "Report",
    "fleet",
    "mine",
    "open_dump",
    "render",
]

#: Where each name of the API is defined.
_API = {
    "CallSiteReport": "dumpminer.analysis.callsites",
    "Dump": "dumpminer.dump.open",
    "open_dump": "dumpminer.dump.open",
    "MineOptions": "dumpminer.options",
    "fleet": "dumpminer.fleet",
    "FleetReport": "dumpminer.fleet",
    "mine": "dumpminer.pipeline",
    "Report": "dumpminer.report.model",
    "render": "dumpminer.report.render",
}


def __getattr__(name: str) -> Any:
    """Import an API name on first use (PEP 562)."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'dumpminer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

