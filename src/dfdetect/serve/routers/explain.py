"""``POST /explain``: Grad-CAM for one image on the PyTorch copy of the model (``serve.explainer``), whole image or
the deciding face (face mode decided by the pipeline's rule, ``pipeline.use_face_mode``), with the overlay and
heat-map panel as base64 PNGs; 501 when explanations cannot run here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from PIL import Image
from starlette.concurrency import run_in_threadpool

from dfdetect.core.labels import verdict
from dfdetect.runtime import pipeline
from dfdetect.serve.decoding import all_failed, decode_upload, png_b64, small_copy
from dfdetect.serve.errors import without_paths
from dfdetect.serve.openapi import EXPLAIN_FACES_BODY, UPLOAD_ERRORS
from dfdetect.serve.results import face_extra, face_rows
from dfdetect.serve.schemas import ErrorResponse, ExplainResponse
from dfdetect.serve.security import require_key
from dfdetect.serve.service import Service, service_of
from dfdetect.serve.uploads import UploadForm, parse_faces, parse_form, read_multipart

router = APIRouter()


@dataclass
class _Maps:
    """One explanation, ready to render: the score it gives, the image the maps are drawn on, the detector."""

    explanation: Any
    image: Image.Image
    detector: Any
    score: float
    faces: Any = None
    """Face mode: the ``FaceResult``; None for the whole image."""
    fields: dict[str, Any] = field(default_factory=dict)


async def _explain_image(svc: Service, img: Image.Image, face_mode: bool, form: UploadForm) -> _Maps:
    try:
        if not face_mode:
            expl, tdet = await run_in_threadpool(svc.explainer.run, img)
            return _Maps(expl, small_copy(img), tdet, round(float(expl.score), 6))
        r, expl, target, overview, tdet = await run_in_threadpool(
            svc.explainer.run_faces, img, form.align, form.threshold
        )
    except LookupError as e:
        raise HTTPException(501, str(e)) from None
    fields = {
        "mode": "faces",
        "decided_by": r.decided_by,
        "faces": face_rows(r),
        "warnings": list(r.warnings),
        "overview_png": await run_in_threadpool(png_b64, overview),
    }
    # the maps are of the deciding face's crop; with no face found, of the whole image (kept small)
    shown = target if r.faces else small_copy(target)
    return _Maps(expl, shown, tdet, round(float(r.score), 6), r, fields)


def _render(m: _Maps) -> tuple[str, str]:
    """The Grad-CAM overlay and the heat-map panel, as base64 PNGs."""
    return png_b64(m.explanation.overlay("gradcam", m.image)), png_b64(m.explanation.panel(m.image))


@router.post(
    "/explain",
    response_model=ExplainResponse,
    response_model_exclude_unset=True,
    tags=["detect"],
    dependencies=[Depends(require_key)],
    openapi_extra=EXPLAIN_FACES_BODY,
    responses=UPLOAD_ERRORS | {501: {"model": ErrorResponse, "description": "Explanations not available"}},
)
async def explain(request: Request) -> ExplainResponse:
    """Grad-CAM for one image: P(fake), the CAM overlay and the heat-map panel as base64 PNGs.

    Face mode (``faces``: auto, on, off; as in /predict): the maps are of the deciding (most suspicious) face's
    crop; the answer adds the per-face rows and ``overview_png`` (the image with every face's box and score).
    """
    svc = service_of(request)
    uploads, raw = await read_multipart(request, svc.settings.max_file_bytes, 1, svc.settings.body_timeout_s)
    if not uploads:
        raise HTTPException(422, "no file: upload one image under the multipart field name 'file'")
    form = parse_form(raw)
    faces = parse_faces(raw.get("faces"))
    if faces is True and (why := pipeline.faces_available()) is not None:
        raise HTTPException(501, f"face mode is not available on this server: {without_paths(why)}")
    ((received, decoded),) = await svc.decode_all(uploads, decode_upload)
    del uploads
    if decoded.image is None:
        raise all_failed([received])
    face_mode = pipeline.use_face_mode(faces, decoded.image.size, svc.detector.data_config)
    m = await _explain_image(svc, decoded.image, face_mode, form)
    del decoded
    thr = m.detector.threshold if form.threshold is None else form.threshold
    overlay_b64, panel_b64 = await run_in_threadpool(_render, m)
    label = verdict(m.score, thr)
    scan_id = None
    if form.record:
        extras = [face_extra(m.faces)] if m.faces is not None else None
        rows = [(received, m.score, label, thr)]
        (scan_id,) = await run_in_threadpool(svc.record, rows, form.case_id, "explain", m.detector.model_id, extras)
    return ExplainResponse(
        path=received.name,
        sha256=received.sha256 or "",
        label=label,
        score=m.score,
        threshold=thr,
        model=m.detector.model_id,
        method="gradcam",
        overlay_png=overlay_b64,
        panel_png=panel_b64,
        scan_id=scan_id,
        **m.fields,
    )
