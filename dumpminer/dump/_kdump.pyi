"""Types of dumpminer/dump/_kdump.c: see its comment for what read() and read_elf() return."""

# bitmap, rank, flat, segments and out are any C-contiguous buffers
# (collections.abc.Buffer is Python 3.12+).
def read(
    fd: int,
    block_size: int,
    descs_offset: int,
    max_pfn: int,
    bitmap: object,
    rank: object,
    phys: int,
    size: int,
    out: object | None,
    flat: object | None = None,
) -> bytes | int | None: ...
def read_elf(
    fd: int, page_size: int, segments: object, phys: int, size: int, out: object | None
) -> bytes | int | None: ...
def flat_records(fd: int, start: int, file_size: int, max_records: int) -> bytes | None: ...
def inflater() -> str: ...
def decompressors() -> list[str]: ...
def use_zlib(yes: bool) -> None: ...
def refuse(flags: int) -> None: ...
