"""The scan history: ``GET /scans`` (newest first, paged, filtered), ``GET /scans/{id}``, ``GET /scans/{id}/image``
(the stored copy, with ``--store-images``) and ``DELETE /scans/{id}``. Ids no scan can have (beyond SQLite's
64-bit integers) are simply not found (404)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from dfdetect.serve.db import ScanRecord
from dfdetect.serve.openapi import ERRORS
from dfdetect.serve.schemas import ErrorResponse, Scan, ScanPage
from dfdetect.serve.security import require_key
from dfdetect.serve.service import Service, service_of
from dfdetect.serve.uploads import EXT_TYPES, MAX_CASE_ID_LEN

router = APIRouter()
NOT_FOUND = ERRORS | {404: {"model": ErrorResponse}}


async def _found(request: Request, scan_id: int, delete: bool = False) -> tuple[Service, ScanRecord]:
    """(the service, scan ``scan_id``: read, or deleted and returned), or 404."""
    svc = service_of(request)
    r = await run_in_threadpool(svc.db.delete if delete else svc.db.get, scan_id)
    if r is None:
        raise HTTPException(404, f"no scan {scan_id}")
    return svc, r


@router.get("/scans", response_model=ScanPage, tags=["history"], dependencies=[Depends(require_key)], responses=ERRORS)
async def list_scans(
    request: Request,
    case_id: str | None = Query(None, max_length=MAX_CASE_ID_LEN, description="Only this case / reference id."),
    sha256: str | None = Query(None, pattern="^[0-9a-fA-F]{64}$", description="Only this image."),
    label: str | None = Query(None, pattern="^(fake|real)$"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> ScanPage:
    """Scan history, newest first, paged."""
    svc = service_of(request)
    records, total = await run_in_threadpool(svc.db.query, case_id, sha256, label, limit, offset)
    return ScanPage(total=total, limit=limit, offset=offset, items=[svc.scan_out(r) for r in records])


@router.get(
    "/scans/{scan_id}",
    response_model=Scan,
    tags=["history"],
    dependencies=[Depends(require_key)],
    responses=NOT_FOUND,
)
async def get_scan(request: Request, scan_id: int) -> Scan:
    svc, r = await _found(request, scan_id)
    return svc.scan_out(r)


@router.get(
    "/scans/{scan_id}/image",
    tags=["history"],
    dependencies=[Depends(require_key)],
    responses=NOT_FOUND,
    response_class=Response,
)
async def get_scan_image(request: Request, scan_id: int) -> Response:
    """The stored copy of a scanned image (only when the server stores images)."""
    svc, r = await _found(request, scan_id)
    if not r.image_path or svc.image_dir is None or not (svc.image_dir / r.image_path).is_file():
        raise HTTPException(404, f"no stored image for scan {scan_id} (the server does not store images)")
    ext = r.image_path.rsplit(".", 1)[-1]
    return FileResponse(
        svc.image_dir / r.image_path,
        media_type=EXT_TYPES.get(ext, "application/octet-stream"),
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'"},
    )


@router.delete(
    "/scans/{scan_id}",
    status_code=204,
    tags=["history"],
    dependencies=[Depends(require_key)],
    responses=NOT_FOUND,
    response_class=Response,
)
async def delete_scan(request: Request, scan_id: int) -> Response:
    """Delete one scan (and its stored image, when no other scan refers to it)."""
    svc, r = await _found(request, scan_id, delete=True)
    if r.image_path and svc.image_dir is not None:
        in_use = await run_in_threadpool(svc.db.image_in_use, r.image_path)
        if not in_use:
            (svc.image_dir / r.image_path).unlink(missing_ok=True)
    return Response(status_code=204)
