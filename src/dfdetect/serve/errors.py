"""What error text clients get: an exception's message with every server path cut down to its file name.

Exception messages from loaders and importers name absolute paths ("model file /srv/models/best.pt not found",
"cannot import name x from y (/usr/lib/python3/...)"): they say where things live on the server, which is no
client's business. The file name stays, so the message still says what is wrong.
"""

from __future__ import annotations

import re

_PATH = re.compile(r"(?<![\w.~:)\]\\/-])(?:[A-Za-z]:)?[\\/](?:[^\s'\"()\[\]{},;:\\/]+[\\/])*([^\s'\"()\[\]{},;:\\/]+)")
"""An absolute POSIX or Windows path, not inside a word or URL ("1/2", "P(fake)/x" and "http://x/y" stay);
group 1 is its last part."""


def without_paths(text: str) -> str:
    """``text`` with each absolute path replaced by its last component ("/srv/m/best.pt" -> "best.pt")."""
    return _PATH.sub(lambda m: m.group(1), text)


def describe(e: BaseException) -> str:
    """``TypeName: message`` of an exception, for a client: paths cut to file names, at most 300 characters."""
    msg = without_paths(str(e)).strip()
    return f"{type(e).__name__}: {msg}"[:300] if msg else type(e).__name__
