"""
dumpminer: mine a slab cache in a vmcore for the strings that leaked.

From drgn's REPL or a script::

    import dumpminer
    report = dumpminer.mine(prog, "kmalloc-32")
    print(dumpminer.render(report, "table"))
"""

from dumpminer.dump import Dump, open_dump
from dumpminer.mine import mine
from dumpminer.report import Report, render

__all__ = ["Dump", "Report", "mine", "open_dump", "render"]
