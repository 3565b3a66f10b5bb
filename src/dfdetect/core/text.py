"""Text that leaves the program safely: CSV cells spreadsheets will not run, file names the terminal will not obey."""

from __future__ import annotations

from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text: strings starting with = + - @ (or tab/CR) get a leading
    apostrophe (OWASP's advice against CSV injection); numbers and everything else pass unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape sequences, newlines in file names) shown escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
