"""Types of dumpminer/analysis/_words.c."""

# rows is any C-contiguous buffer of whole rows of width bytes (collections.abc.Buffer is
# Python 3.12+); returns one byte per row, 1 where the row is string-less.
def stringless(rows: object, width: int, min_length: int) -> bytes: ...

# words: n rows of width u64; addresses, module_starts, module_ends: u64 buffers; with
# min_length > 0 only the string-less rows are grouped.
# Returns (keys, counts, samples) as bytes: G rows of key_width u64, G i64, G rows of sample i64.
def group_shapes(
    words: object,
    n: int,
    width: int,
    key_width: int,
    addresses: object,
    image_start: int,
    image_end: int,
    module_starts: object,
    module_ends: object,
    sample: int,
    min_length: int,
) -> tuple[bytes, bytes, bytes]: ...
