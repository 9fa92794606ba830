"""
The kernel's kallsyms read on demand (dumpminer.dump.kallsyms.KallsymsTable)
against drgn's own kallsyms index, on the real sample dumps of both series.

The table decodes a name only when a lookup finds it; drgn's
load_vmlinux_kallsyms decodes them all. Every lookup must give what drgn's
index gives: the same symbol, address, size, kind and binding, or nothing
where drgn finds nothing (the gap after a section's last symbol, aliases
that share an address).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import drgn
import pytest
from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

from dumpminer.dump.kallsyms import KallsymsTable


def _key(symbol: drgn.Symbol) -> tuple[str, int, int, drgn.SymbolKind, drgn.SymbolBinding]:
    return symbol.name, symbol.address, symbol.size, symbol.kind, symbol.binding


@pytest.fixture(scope="module")
def tables(
    sample_manifest: dict[str, Any], open_prog: Callable[[str, str], drgn.Program]
) -> tuple[drgn.Program, KallsymsTable, drgn.SymbolIndex]:
    vmcore = next(d["path"] for d in sample_manifest["dumps"] if d["format"] == "kdump")
    prog = open_prog(vmcore, sample_manifest["vmlinux"])
    return prog, KallsymsTable.read(prog), load_vmlinux_kallsyms(prog)


def test_every_symbol_is_found_as_drgn_finds_it(
    tables: tuple[drgn.Program, KallsymsTable, drgn.SymbolIndex],
) -> None:
    prog, table, index = tables
    everything = index(prog, None, None, False)
    assert len(table.addresses) == len(everything) > 10_000
    addresses = set()
    for symbol in everything:
        end = symbol.address + symbol.size
        addresses.update({symbol.address, symbol.address + 1, max(end - 1, 0), end})
    mismatches = []
    for address in sorted(a for a in addresses if a < 1 << 64):
        got = [_key(s) for s in table(prog, None, address, False)]
        want = [_key(s) for s in index(prog, None, address, False)]
        if got != want:
            mismatches.append((hex(address), got, want))
    assert mismatches == []


def test_random_image_addresses_are_found_as_drgn_finds_them(
    tables: tuple[drgn.Program, KallsymsTable, drgn.SymbolIndex],
) -> None:
    prog, table, index = tables
    start, end = prog.symbol("_text").address, prog.symbol("_end").address
    rng = random.Random(20261207)
    addresses = [rng.randrange(start - 0x20000, end + 0x20000) for _ in range(3000)]
    found = 0
    for address in addresses:
        got = [_key(s) for s in table(prog, None, address, False)]
        assert got == [_key(s) for s in index(prog, None, address, False)], hex(address)
        found += bool(got)
    assert found > 1000  # most of the image is some symbol's


def test_only_lookups_by_address(
    tables: tuple[drgn.Program, KallsymsTable, drgn.SymbolIndex],
) -> None:
    prog, table, _ = tables
    with pytest.raises(NotImplementedError):
        table(prog, "_stext", None, True)
