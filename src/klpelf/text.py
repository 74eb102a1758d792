"""Text that came from the input, made safe for one line of a terminal.

Section, symbol and module names, modinfo values and lines of symbol files are bytes
chosen by whoever made the input.  The CLI prints every line through
:func:`terminal_line`, so that a name with a newline cannot split the one line a
problem gets, a control sequence cannot reach the terminal, and a 60 MB line of a
malformed Module.symvers is not printed whole.  JSON output needs none of this (its
encoder escapes), so the library keeps names as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: The longest line printed whole; longer lines keep their start and their end.
#: Generous: a KSYM_NAME_LEN symbol (512 bytes) in a message fits several times.
MAX_LINE = 4096

# C0 controls, DEL, C1 controls, and the lone surrogates that stand for undecodable
# bytes (names are decoded with surrogateescape), and the Unicode line and paragraph
# separators, which some terminals and every str.splitlines() break lines at.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\udc80-\udcff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    code = ord(c)
    if code >= 0xDC80:  # an undecodable input byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character, undecodable byte and line separator
    written as a backslash escape (``\\n``, ``\\x1b`` as ``\\e``, ``\\x80``, ...), and a
    backslash itself doubled only when something else was escaped (so ordinary text,
    Windows-free paths included, prints unchanged)."""
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape_one, text.replace("\\", "\\\\"))


def shorten(text: str, limit: int = MAX_LINE) -> str:
    """``text`` cut to about ``limit`` characters: its start and end kept, the middle
    said in characters (``... [12345 characters cut] ...``)."""
    if len(text) <= limit:
        return text
    keep = max(limit // 2 - 20, 1)
    cut = len(text) - 2 * keep
    return f"{text[:keep]} ... [{cut} characters cut] ... {text[-keep:]}"


def terminal_line(text: str, limit: int = MAX_LINE) -> str:
    """One line for the terminal: escaped, then shortened (see :func:`escape`)."""
    return shorten(escape(text), limit)


def join_lines(lines: Iterable[str], limit: int = MAX_LINE) -> str:
    """``lines`` as text for the terminal: each line made safe (:func:`terminal_line`),
    so a name with a newline in one of them cannot add a line; joined with newlines."""
    return "\n".join(terminal_line(line, limit) for line in lines)


#: The longest piece of an input line quoted in a message, before it is cut.
MAX_QUOTE = 200


def quoted(text: str, limit: int = MAX_QUOTE) -> str:
    """``text`` (a line of an input file) quoted for a message, cut to about
    ``limit`` characters first: a malformed 60 MB line is not carried whole."""
    return repr(shorten(text, limit))
