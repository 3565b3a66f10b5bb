"""The endpoints, one ``APIRouter`` per group: ``health`` (/health, /models), ``predict``, ``explain``,
``forensics``, ``scans`` (the history) and ``page`` (the web page at /). ``ROUTERS`` is the order
``create_app`` includes them in; each route keeps its function name, from which FastAPI derives its operationId.
"""

from __future__ import annotations

from dfdetect.serve.routers import explain, forensics, health, page, predict, scans

ROUTERS = (health.router, predict.router, explain.router, forensics.router, scans.router, page.router)
