"""Types of dumpminer/extract/_runs.c: see its comment for what scan() returns."""

# rows, addresses and slab_of_row are any C-contiguous buffers (collections.abc.Buffer is
# Python 3.12+).
def scan(
    rows: object,
    width: int,
    min_length: int,
    addresses: object | None,
    examples: int,
    hash_bits: int,
    slab_of_row: object | None,
    keep_runs: bool = True,
    blank_pointers: bool = False,
) -> tuple[
    bytes,
    bytes,
    bytes,
    list[bytes],
    bytes,
    bytes,
    bytes,
    bytes,
    bytes,
    bytes,
    bytes,
    bytes,
    bytes,
    int,
]: ...

# Number masks (the second section of _runs.c): cluster.masked() of each text.
def mask_numbers(texts: list[bytes]) -> list[bytes]: ...
def key_flags(keys: list[bytes], separators: bytes, least: int) -> bytes: ...
