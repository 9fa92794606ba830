"""
ELF cores: ``/proc/vmcore`` copies, ``makedumpfile -E``, QEMU's
``dump-guest-memory`` without ``-z``.

The facts come from the program headers (``PT_LOAD`` ranges for the memory
covered, ``p_filesz < p_memsz`` for filtering) and the ``PT_NOTE`` segment
(VMCOREINFO). pyelftools parses the header and is imported only when an ELF
dump is read.
"""

from __future__ import annotations

from typing import BinaryIO

from dumpminer.dump.info.facts import Result, cut_short_why, dump_facts, not_a_dump
from dumpminer.dump.info.notes import find_vmcoreinfo_in_notes
from dumpminer.dump.info.sources import FileSource
from dumpminer.errors import NotADumpError

__all__ = ["ELF_MAGIC", "read_elf"]

ELF_MAGIC = b"\x7fELF"

# ELF constants (kept local: only a handful are needed).
_PT_LOAD = 1
_PT_NOTE = 4
_ELF_MACHINES: dict[str, str] = {
    "EM_X86_64": "x86_64",
    "EM_386": "i386",
    "EM_AARCH64": "aarch64",
    "EM_ARM": "arm",
    "EM_S390": "s390x",
    "EM_RISCV": "riscv64",
    "EM_LOONGARCH": "loongarch64",
    "EM_MIPS": "mips",
    "EM_SPARCV9": "sparc64",
}


def read_elf(path: str, f: BinaryIO, size: int, truncated_data_ok: bool = False) -> Result:
    """
    Read the facts of the ELF core open as *f* (*size* bytes).

    :param truncated_data_ok: Accept ``PT_LOAD`` segments that run past the
        end of the file (a copy cut short); notes must still be whole.
    :raises NotADumpError: if it is not an ELF core or its headers are corrupt.
    """
    # Imported lazily: pyelftools is only needed for ELF dumps.
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        elf = ELFFile(f)
        hdr = elf.header
        if hdr["e_type"] != "ET_CORE":
            raise not_a_dump(path, f"ELF file of type {hdr['e_type']}, not a core (ET_CORE)")
        phnum = elf.num_segments()
        phentsize = hdr["e_phentsize"]
        if phnum == 0:
            raise not_a_dump(path, "ELF core without program headers")
        if phentsize < (56 if elf.elfclass == 64 else 32):
            raise not_a_dump(path, f"bad ELF e_phentsize {phentsize}")
        if hdr["e_phoff"] + phnum * phentsize > size:
            raise not_a_dump(path, "program headers extend past the end of the file (truncated?)")
        machine = hdr["e_machine"]
        little = elf.little_endian
        phdrs = [
            (
                seg["p_type"],
                seg["p_offset"],
                seg["p_paddr"],
                seg["p_filesz"],
                seg["p_memsz"],
            )
            for seg in (elf.get_segment(i) for i in range(phnum))
        ]
    except (NotADumpError, OSError):
        raise
    except ELFError as e:
        raise not_a_dump(path, f"corrupt ELF header ({e})") from e
    except Exception as e:  # pyelftools/construct raise many kinds on bad input
        raise not_a_dump(path, f"corrupt ELF header ({type(e).__name__})") from e

    arch = _elf_arch(machine, little)
    src = FileSource(f, size)
    vmcoreinfo_raw: bytes | None = None
    loads: list[tuple[int, int]] = []
    filtered = False
    data_end = 0
    for ptype, off, paddr, filesz, memsz in phdrs:
        ptype_num = _PT_NOTE if ptype == "PT_NOTE" else _PT_LOAD if ptype == "PT_LOAD" else ptype
        if off + filesz > size and not (truncated_data_ok and ptype_num == _PT_LOAD):
            raise not_a_dump(
                path,
                f"segment at file offset {off} of {filesz} bytes ends past the end "
                f"of the {size}-byte file (truncated copy?)",
            )
        if ptype_num == _PT_LOAD:
            data_end = max(data_end, off + filesz)
        if ptype_num == _PT_NOTE and vmcoreinfo_raw is None:
            vmcoreinfo_raw = find_vmcoreinfo_in_notes(src.read, off, filesz, not little)
        elif ptype_num == _PT_LOAD:
            if memsz:
                loads.append((paddr, paddr + memsz))
            if filesz < memsz:
                filtered = True
    phys = _union_size(loads) if loads else None
    return dump_facts(
        path,
        "elf",
        arch,
        vmcoreinfo_raw,
        release=None,
        timestamp=None,
        block_size=None,
        phys_mem_bytes=phys,
        filtered=filtered,
        dump_level=None,
        cut_short=cut_short_why(data_end, size, "memory"),
    )


def _elf_arch(machine: object, little: bool) -> str:
    """Machine name for ELF ``e_machine`` (pyelftools gives ``EM_*`` names)."""
    if machine == "EM_PPC64":
        return "ppc64le" if little else "ppc64"
    if isinstance(machine, str):
        return _ELF_MACHINES.get(machine, machine.removeprefix("EM_").lower())
    return f"elf-machine-{machine}"


def _union_size(ranges: list[tuple[int, int]]) -> int:
    """Bytes covered by the union of half-open *ranges*."""
    total = 0
    cur_lo = cur_hi = -1
    for lo, hi in sorted(ranges):
        if lo > cur_hi:
            total += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    return total + cur_hi - cur_lo
