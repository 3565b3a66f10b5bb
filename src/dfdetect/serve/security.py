"""Who may use the server: the API-key dependency and the Host/Origin guard middleware.

- ``require_key``: with a key configured (``create_app(api_key=...)`` or ``$DFDETECT_API_KEY``), every endpoint
  but ``/health`` and the page needs it in ``X-API-Key`` (401 missing, 403 wrong; compared in constant time).
- ``HostOriginGuard``: only loopback Host names and the configured ``allowed_hosts`` are answered (else 400:
  DNS rebinding); a POST/PUT/PATCH/DELETE whose ``Origin`` is neither the server's own nor a ``cors_origins``
  entry gets 403 (a page the analyst opens cannot write or delete scans, even on a server without a key).
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from dfdetect.serve.settings import API_KEY_HEADER, ServeSettings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")

header_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Needed when the server has a key")


async def require_key(request: Request, supplied: str | None = Depends(header_scheme)) -> None:
    """FastAPI dependency: the request carries the server's API key (when it has one)."""
    expected: str | None = request.app.state.settings.api_key
    if expected is None:
        return
    if not supplied:
        raise HTTPException(401, f"missing API key (send it in the {API_KEY_HEADER} header)")
    if not hmac.compare_digest(supplied.encode(), expected.encode()):
        raise HTTPException(403, "wrong API key")


def host_name(host_header: str) -> str:
    """The name part of a Host header: ``[::1]:8000`` -> ``::1``, ``localhost:8000`` -> ``localhost``."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class HostOriginGuard:
    """Pure ASGI middleware: answer only our own Host names, and refuse cross-origin writes (see the module
    docstring). Not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware wraps every request in a task
    group and memory streams, which held the GIL for ~15% of a busy server's Python time (py-spy, bench_serve)."""

    def __init__(self, app: ASGIApp, settings: ServeSettings) -> None:
        self.app = app
        self.allowed = {h.lower() for h in (*LOOPBACK_HOSTS, *settings.allowed_hosts)}
        self.any_host = "*" in self.allowed
        self.cors = {o.rstrip("/").lower() for o in settings.cors_origins or []}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refusal := self.refusal(scope["method"], Headers(scope=scope))):
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refusal(self, method: str, headers: Headers) -> Response | None:
        host = headers.get("host", "")
        if not self.any_host and host_name(host) not in self.allowed:
            return JSONResponse({"detail": "this server does not answer to that Host name"}, status_code=400)
        origin = headers.get("origin")
        if method in STATE_CHANGING and origin is not None:
            o = origin.rstrip("/").lower()
            own = urlsplit(o).netloc == host.lower() and urlsplit(o).scheme in ("http", "https")
            if not own and o not in self.cors and "*" not in self.cors:
                return JSONResponse(
                    {"detail": f"cross-origin {method} refused (Origin {origin[:80]!r}); allow it with --cors"},
                    status_code=403,
                )
        return None
