"""How uvicorn runs the app: its HTTP/1.1 protocol (h11) with a deadline for each request head, and the options
``dfdetect serve`` passes (``uvicorn_options``).

uvicorn (0.54 read) arms ``timeout_keep_alive`` only after a response, and any byte cancels it: a connection that
never sends a request, or sends a request line and then nothing (one byte now and then is enough), is held open
for as long as the client likes, and enough of them exhaust the server's file descriptors. ``HeadTimeoutProtocol``
also closes a connection whose complete request head (request line and headers) has not arrived within
``timeout_keep_alive`` seconds of connecting or of its previous response. Bodies are not timed: the app reads them,
checking sizes as they stream in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11

try:
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError:  # a uvicorn that moved its h11 protocol: serve with uvicorn's own (see uvicorn_options)
    H11Protocol = object  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

TIMEOUT_KEEP_ALIVE = 5
"""Seconds a connection may wait before its request head is complete (uvicorn's keep-alive default)."""
MAX_HEAD_BYTES = 16 * 1024
"""Largest request head (request line and headers) h11 buffers; a larger one is answered 400 and closed."""


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head is not complete in ``timeout_keep_alive``."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # a whole request head has arrived
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.timeout_keep_alive_handler()  # closes the connection, as an idle keep-alive one


USES = ("connection_made", "data_received", "on_response_complete", "connection_lost", "timeout_keep_alive_handler")
"""The members of uvicorn's ``H11Protocol`` that ``HeadTimeoutProtocol`` overrides or calls (checked at start)."""


def head_timeout_supported() -> bool:
    """Whether this uvicorn's h11 protocol still has what ``HeadTimeoutProtocol`` builds on (uvicorn does not
    promise it: it is an internal class)."""
    return H11Protocol is not object and all(callable(getattr(H11Protocol, m, None)) for m in USES)


def uvicorn_options(timeout_keep_alive: float = TIMEOUT_KEEP_ALIVE) -> dict[str, Any]:
    """What ``dfdetect serve`` gives ``uvicorn.run`` / ``uvicorn.Config`` besides the app, host and port.

    On a uvicorn whose h11 protocol lacks what ``HeadTimeoutProtocol`` needs, the server still starts, on uvicorn's
    own h11 protocol (idle connections then time out only after a response), and says so in its log."""
    http = f"{HeadTimeoutProtocol.__module__}:{HeadTimeoutProtocol.__qualname__}"
    if not head_timeout_supported():
        log.warning(
            "this uvicorn's h11 protocol lacks %s: serving without the request-head deadline "
            "(connections that send nothing are closed only by uvicorn's own keep-alive timeout)",
            ", ".join(m for m in USES if H11Protocol is object or not callable(getattr(H11Protocol, m, None))),
        )
        http = "h11"
    return {
        "http": http,
        "timeout_keep_alive": timeout_keep_alive,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "server_header": False,
    }
