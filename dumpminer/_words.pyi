"""Types of dumpminer/_words.c."""

# rows is any C-contiguous buffer of whole rows of width bytes (collections.abc.Buffer is
# Python 3.12+); returns one byte per row, 1 where the row is string-less.
def stringless(rows: object, width: int, min_length: int) -> bytes: ...
