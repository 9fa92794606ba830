"""
Binary-looking runs: the bytes of numeric fields that happen to be printable.

A timestamp, a counter or a hash is a few random bytes, and when three of them
in a row are printable they make a run like ``kN2`` or ``GZ1``. A field that
every object of a cache holds with the same value (an inode's time stamps,
set in the same second at boot) then counts as many objects as a real string,
and leads the report above it. Pointer bytes are left out before counting
(:mod:`dumpminer.extract.pointers`); these cannot be, as nothing in the bytes
says a word is a number.

What does tell them apart is their shape. Such runs are short (three random
printable bytes are common, five are rare: docs/clustering.md) and mix
character classes the way no word does: ``mR.``, ``z[d``, ``H8 ``. So a run
shorter than :data:`SHORT_RUN` bytes that is not one word (all lower case,
all upper case, all digits, lower case then digits, or ``_`` and upper case)
is *binary-looking*, and a cluster made only of such runs *sinks*: it is
listed after every other cluster, whatever its count (:func:`sinks`). Nothing
is dropped; the JSON marks such a cluster ``"binary": true``.

A run of four bytes or more never sinks, so no NUL-terminated string of four
bytes or more is ever moved down: that is the price docs/clustering.md
measures (``bench/survey_noise.py``), in three-byte strings with mixed case or
punctuation (``_Xa``, ``x&^``), none of them planted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

#: Runs this long or longer are never binary-looking.
SHORT_RUN = 4

#: One word: what a short run must be to count as text.
_WORD = re.compile(rb"[a-z]+[0-9]*|[A-Z]+|[0-9]+|_[A-Z]+")


def binary_looking(text: bytes) -> bool:
    """Whether *text* (a run) is short and not one word: bytes of a number, most likely."""
    return len(text) < SHORT_RUN and _WORD.fullmatch(text) is None


def all_binary_looking(texts: Iterable[bytes]) -> bool:
    """Whether *texts* are all binary-looking (False when there are none)."""
    seen = False
    for text in texts:
        if not binary_looking(text):
            return False
        seen = True
    return seen


class RunShape(NamedTuple):
    """What the survey (bench/survey_noise.py) knows of one distinct run text in a cache."""

    text: bytes
    objects: int
    runs: int
    #: Runs followed by a NUL byte inside the object.
    nul_terminated: int
    #: Distinct offsets in the object where the text starts.
    offsets: int


def sinks(shape: RunShape) -> bool:
    """Whether the string rule sinks a run of this shape (its text decides)."""
    return binary_looking(shape.text)
