"""Types of dumpminer/dump/_kdump.c: see its comment for what read() returns."""

# bitmap, rank and out are any C-contiguous buffers (collections.abc.Buffer is Python 3.12+).
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
) -> bytes | int | None: ...
def inflater() -> str: ...
def use_zlib(yes: bool) -> None: ...
