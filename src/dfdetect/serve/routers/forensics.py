"""``POST /forensics``: classic forensics for one image (``dfdetect.analysis.forensics``: ELA, noise, spectrum,
metadata flags) beside the served model's whole-image verdict (through the pipeline, as ``/predict`` with
``faces=off``), with a self-contained HTML report; 501 when the analyses are not installed."""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from dfdetect.core.version import __version__
from dfdetect.runtime import pipeline
from dfdetect.serve.decoding import MAX_RENDER_SIDE, Received, all_failed, png_b64, prepare_upload
from dfdetect.serve.errors import without_paths
from dfdetect.serve.openapi import EXPLAIN_BODY, UPLOAD_ERRORS
from dfdetect.serve.results import jsonable
from dfdetect.serve.schemas import ErrorResponse, ForensicsResponse
from dfdetect.serve.security import require_key
from dfdetect.serve.service import service_of
from dfdetect.serve.uploads import parse_form, read_multipart

router = APIRouter()
SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def analyze_upload(fx: Any, r: Received) -> Any:
    """``dfdetect.analysis.forensics.analyze_file`` on the upload (metadata readers want a file), named as uploaded."""
    suffix = Path(r.name).suffix.lower()
    suffix = suffix if suffix in SUFFIXES else ""
    with tempfile.TemporaryDirectory(prefix="dfdetect-serve-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(r.data)
        a = fx.analyze_file(path)
    a.path = r.name
    if a.error:
        a.error = without_paths(a.error.replace(str(path), r.name))
    return a


def _maps_b64(a: Any) -> list[str | None]:
    """The ELA, noise and spectrum images as small base64 PNGs (None where the analysis has none)."""
    out: list[str | None] = []
    for part in (a.ela, a.noise, a.spectrum):
        if part is None:
            out.append(None)
            continue
        im = part.image()
        im.thumbnail((MAX_RENDER_SIDE, MAX_RENDER_SIDE))
        out.append(png_b64(im))
    return out


@router.post(
    "/forensics",
    response_model=ForensicsResponse,
    tags=["detect"],
    dependencies=[Depends(require_key)],
    openapi_extra=EXPLAIN_BODY,
    responses=UPLOAD_ERRORS | {501: {"model": ErrorResponse, "description": "dfdetect.analysis.forensics missing"}},
)
async def forensics(request: Request) -> ForensicsResponse:
    """Classic forensics for one image (ELA, noise, spectrum, metadata flags) beside the model's verdict,
    with a self-contained HTML report. Indicators, not proof."""
    svc = service_of(request)
    try:
        fx = importlib.import_module("dfdetect.analysis.forensics")
        report = importlib.import_module("dfdetect.analysis.forensics.report")
    except ImportError as e:
        why = without_paths(str(e))
        raise HTTPException(501, f"forensic analyses are not available in this installation ({why})") from None
    uploads, raw = await read_multipart(request, svc.settings.max_file_bytes, 1, svc.settings.body_timeout_s)
    if not uploads:
        raise HTTPException(422, "no file: upload one image under the multipart field name 'file'")
    form = parse_form(raw)
    det = svc.detector
    opts = pipeline.Options(faces=False, threshold=form.threshold)
    ((received, prepared),) = await svc.decode_all(uploads, prepare_upload, det, opts)
    del uploads
    if received.error is not None:
        raise all_failed([received])
    rec = pipeline.finish(det, prepared, await svc.batcher.score(prepared.arrays), opts)
    a = await run_in_threadpool(analyze_upload, fx, received)
    if a.error:
        raise HTTPException(422, a.error)
    model = report.ModelResult(
        model_id=det.model_id, arch=det.arch, score=rec.score, threshold=rec.threshold, label=rec.label
    )
    html = await run_in_threadpool(report.render_report, a, model, __version__)
    pngs = await run_in_threadpool(_maps_b64, a)
    scan_id = None
    if form.record:
        rows = [(received, rec.score, rec.label, rec.threshold)]
        (scan_id,) = await run_in_threadpool(svc.record, rows, form.case_id, "forensics", det.model_id)
    return ForensicsResponse(
        path=received.name,
        sha256=received.sha256 or "",
        label=rec.label,
        score=rec.score,
        threshold=rec.threshold,
        model=det.model_id,
        summary=jsonable(a.summary()),
        ela_png=pngs[0],
        noise_png=pngs[1],
        spectrum_png=pngs[2],
        report_html=html,
        scan_id=scan_id,
    )
