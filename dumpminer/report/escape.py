"""
Escaping text from an untrusted dump for where it goes: a terminal that never
receives a control character, Markdown with the characters that would change
a table escaped, CSV cells that a spreadsheet will not run.
"""

from __future__ import annotations

import re


def csv_cell(value: object) -> str:
    """
    A CSV cell that a spreadsheet will not run, in the form OWASP gives for
    CSV injection: text starting with ``=``, ``+``, ``-``, ``@``, tab or
    carriage return gets a leading ``'`` (control characters are shown as
    ``\\xNN`` first, so only the first four remain).
    """
    text = terminal_escape(str(value))
    if text and text[0] in "=+-@\t\r":
        return "'" + text
    return text


def csv_line(cells: list[object]) -> str:
    """
    One CSV record (RFC 4180): a cell is quoted when it holds a comma, a
    quote or a line break, and also when it starts or ends with a space,
    which readers that trim cells would otherwise lose.
    """
    out = []
    for cell in cells:
        text = str(cell)
        if any(c in text for c in ',"\r\n') or text != text.strip(" "):
            text = '"' + text.replace('"', '""') + '"'
        out.append(text)
    return ",".join(out) + "\n"


#: What Markdown (CommonMark with GitHub's tables, strikethrough and math)
#: would read as markup inside a table cell or a line of text: emphasis,
#: code, links, HTML and entities, cell borders, the backslash itself. The
#: text never starts a line, so block markers (``#``, ``-``, ``1.``) are safe.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<|&~$])")


def markdown_escape(text: str) -> str:
    """Backslash-escape the characters Markdown would read as markup, and only those."""
    return _MD_SPECIAL.sub(r"\\\1", terminal_escape(text))


_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def terminal_escape(text: str) -> str:
    """Show every byte outside printable ASCII as ``\\xNN``: no control characters."""
    # surrogateescape: paths from the command line may hold undecodable bytes.
    return _UNPRINTABLE.sub(
        lambda m: "".join(f"\\x{b:02x}" for b in m.group().encode("utf-8", "surrogateescape")),
        text,
    )
