"""The REST API and web page: ``create_app(...)`` builds the FastAPI app that uvicorn serves (``app_from_env`` is the
factory ``dfdetect serve`` starts in every worker process).

What lives where in ``dfdetect.serve``:

- ``settings`` (``ServeSettings``, the ``DFDETECT_SERVE_*`` variables), ``security`` (API key, Host/Origin guard);
- ``uploads`` (the streaming multipart parser, its size limits, form fields), ``decoding`` (uploads through the
  pipeline's decoder, the pixel budget), ``batcher`` (``MicroBatcher``: one inference thread), ``explainer``
  (``ExplainRunner``: Grad-CAM on a PyTorch copy), ``service`` (``Service``: what the endpoints share, the decode
  slots, recording scans), ``results`` (records as API rows), ``errors`` (error text without server paths),
  ``db`` (the scan history);
- ``routers`` (one ``APIRouter`` per endpoint group), ``openapi`` (the hand-written schema parts).

Throughput: the event loop never runs model code. Decoding runs in Starlette's thread pool (PIL and numpy
release the GIL), at most ``max_concurrent_decodes`` images at once and at most ``max_request_mpx``
megapixels per request; inference runs in one dedicated thread that
owns the model and scores whatever requests are waiting as one batch (``serve.batcher``).

Grad-CAM (``POST /explain``) needs gradients, so it runs on a separate PyTorch copy of the model, loaded on
the first request, one explanation at a time, and only when ``dfdetect.analysis.explain`` is installed (501 if not).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from dfdetect.core.version import __version__
from dfdetect.serve.batcher import MicroBatcher
from dfdetect.serve.db import ScanDB
from dfdetect.serve.routers import ROUTERS
from dfdetect.serve.routers.page import STATIC_DIR
from dfdetect.serve.security import HostOriginGuard
from dfdetect.serve.service import Service, set_threads
from dfdetect.serve.settings import (
    API_KEY_ENV,
    API_KEY_HEADER,
    BODY_TIMEOUT_S,
    MAX_REQUEST_MPX,
    ServeSettings,
    settings_from_env,
)

__all__ = ["MicroBatcher", "ServeSettings", "app_from_env", "create_app"]

log = logging.getLogger(__name__)


def create_app(
    model: str | None = None,
    db: str | Path = "dfdetect-scans.db",
    api_key: str | None = None,
    max_upload_mb: float = 20,
    cors_origins: list[str] | None = None,
    store_images: bool | str | Path = False,
    *,
    device: str = "auto",
    backend: str = "auto",
    precision: str = "fp32",
    max_files: int = 32,
    max_batch: int = 16,
    max_wait_ms: float = 2.0,
    threads: int | None = None,
    allowed_hosts: list[str] | None = None,
    max_request_mpx: float = MAX_REQUEST_MPX,
    max_concurrent_decodes: int | None = None,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> FastAPI:
    """Build the app. The model loads in the lifespan (at server start), not here.

    ``allowed_hosts``: Host names answered besides 127.0.0.1, localhost and ::1 (``*`` = any). Requests with any
    other Host header get 400 (a DNS-rebinding page cannot read or change the history); state-changing requests
    (POST, DELETE) whose ``Origin`` is neither the server's own nor in ``cors_origins`` get 403 (a web page the
    analyst opens cannot write or delete scans, even without a key).

    ``api_key``: when given (or set in ``$DFDETECT_API_KEY``), every endpoint except ``/health`` and the
    web page needs the header ``X-API-Key``. ``store_images``: False (default: images are never kept),
    True (a folder beside the database) or a folder path. ``threads``: intra-op threads for inference
    (default: the backend's own choice, usually one per core; 1 is much faster on a CPU shared with other
    busy processes).

    Limits: ``max_upload_mb`` per file (413 while streaming), ``max_files`` per request (413),
    ``max_request_mpx`` megapixels decoded per request (declared sizes summed in upload order; the files past it
    get a per-file 413 error, the others are scored), ``max_concurrent_decodes`` images decoded at once across all
    requests (None: one per CPU core), ``body_timeout_s`` seconds a request body may send nothing (then 408).
    """
    key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
    settings = ServeSettings(
        model=str(model) if model is not None else None,
        db=db,
        api_key=key,
        max_upload_mb=float(max_upload_mb),
        max_files=max_files,
        cors_origins=list(cors_origins) if cors_origins else None,
        store_images=store_images,
        device=device,
        backend=backend,
        precision=precision,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        threads=threads,
        allowed_hosts=list(allowed_hosts or []),
        max_request_mpx=float(max_request_mpx),
        max_concurrent_decodes=max_concurrent_decodes,
        body_timeout_s=float(body_timeout_s),
    )
    app = FastAPI(
        title="dfdetect",
        version=__version__,
        description="Deepfake-image detection: P(fake) per image, Grad-CAM explanations, scan history.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.add_middleware(HostOriginGuard, settings=settings)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[API_KEY_HEADER, "Content-Type"],
        )
    app.add_exception_handler(Exception, _unexpected)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load the detector and open the history at start-up; stop the inference thread and close at shutdown."""
    from dfdetect.runtime.detector import Detector

    settings: ServeSettings = app.state.settings
    detector = await run_in_threadpool(
        Detector.load, settings.model, settings.device, settings.backend, settings.precision
    )
    if settings.threads:
        await run_in_threadpool(set_threads, detector, settings.threads)
    scans = await run_in_threadpool(ScanDB, settings.db)
    svc = Service(settings, detector, scans)
    svc.batcher.start()
    app.state.svc = svc
    info = svc.model_info()
    log.info(
        "serving %s (%s %s on %s), scan history %s%s",
        info.id,
        info.backend,
        info.precision,
        info.device,
        settings.db,
        ", API key required" if settings.api_key else "",
    )
    try:
        yield
    finally:
        svc.close()
        scans.close()


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn dfdetect.serve.api:app_from_env --factory`` (and ``dfdetect serve --workers N``).

    Reads ``DFDETECT_SERVE_*`` variables set by ``dfdetect serve`` (``settings.ENV_SETTINGS``); the API key from
    ``DFDETECT_API_KEY``.
    """
    return create_app(api_key=None, **settings_from_env())
