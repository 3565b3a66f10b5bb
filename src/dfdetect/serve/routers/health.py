"""``GET /health`` (liveness and the served model; no key) and ``GET /models`` (the loaded model; key)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from dfdetect.core.version import __version__
from dfdetect.serve.openapi import ERRORS
from dfdetect.serve.schemas import Health, Models
from dfdetect.serve.security import require_key
from dfdetect.serve.service import service_of

router = APIRouter()


@router.get("/health", response_model=Health, tags=["service"])
async def health(request: Request) -> Health:
    """Liveness and the model being served (no API key needed)."""
    return Health(status="ok", version=__version__, model=service_of(request).model_info())


@router.get("/models", response_model=Models, tags=["service"], dependencies=[Depends(require_key)], responses=ERRORS)
async def models(request: Request) -> Models:
    """The loaded model(s)."""
    return Models(models=[service_of(request).model_info()])
