"""
Reading a dump: what it is before drgn starts (info/), finding and checking vmlinux
(debuginfo), the kernel's BTF and kallsyms without one, the fast kdump page reader,
the dump's time, and opening it as a drgn program (open).

The bottom layer: it imports only :mod:`dumpminer.errors`.
"""
