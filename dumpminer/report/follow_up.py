"""
What to type next about an example object: crash's and drgn's commands, shared
by the table, the JSON (``look``) and the HTML page.
"""

from __future__ import annotations

from typing import Any


def look_commands(
    address: int, object_size: int, before: int = 0, after: int = 0
) -> dict[str, Any]:
    """
    The crash and drgn commands that show the object at *address*: JSON's
    ``look``, the same commands as the table's follow-ups.
    """
    crash = [
        line.removeprefix("crash> ")
        for line in follow_up_commands(address, object_size, before, after)
        if line.startswith("crash> ")
    ]
    return {
        "crash": crash[0],
        "drgn": f"identify_address(prog, {address:#x})",
        "crash_more": crash[1:],
    }


def follow_up_commands(
    address: int, object_size: int, before: int = 0, after: int = 0
) -> list[str]:
    """
    What to type next about the object at *address*, crash first: its words
    with the context windows (``rd -64``, where pointers and counters show
    what struct it is), its slab and cache (``kmem``), and who points at it
    (``search -k``, which reads all of kernel memory: slow on large dumps);
    then drgn's view of the address.
    """
    start = (address - before) & ~7
    end = address + object_size + after
    words = (end - start + 7) // 8
    return [
        f"crash> rd -64 {start:#x} {words}",
        f"crash> kmem {address:#x}",
        f"crash> search -k {address:#x}",
        f">>> identify_address(prog, {address:#x})",
    ]
