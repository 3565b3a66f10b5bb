"""``POST /predict``: one or many images scored through the one predict path (``dfdetect.runtime.pipeline``).

multipart body --(streamed, per-file size limit while reading)--> bytes per file --(pixel budget; decode slots,
thread pool: hash, safe decode, whole image or faces, preprocess)--> arrays --(micro-batcher: one inference
thread)--> P(fake) --> scan history --> the same JSON per image as ``dfdetect predict --json``.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException, Request

from dfdetect.runtime import pipeline
from dfdetect.serve.decoding import all_failed, prepare_upload
from dfdetect.serve.errors import without_paths
from dfdetect.serve.openapi import UPLOAD_BODY, UPLOAD_ERRORS
from dfdetect.serve.results import face_extra, prediction_out
from dfdetect.serve.schemas import PredictResponse
from dfdetect.serve.security import require_key
from dfdetect.serve.service import service_of
from dfdetect.serve.uploads import parse_faces, parse_form, read_multipart

log = logging.getLogger(__name__)
router = APIRouter()


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_unset=True,
    tags=["detect"],
    dependencies=[Depends(require_key)],
    openapi_extra=UPLOAD_BODY,
    responses=UPLOAD_ERRORS,
)
async def predict(request: Request) -> PredictResponse:
    """Score one or many images (multipart field ``files``); the same JSON per image as ``predict --json``.

    Face mode (form field ``faces``: ``auto`` (default), ``on`` or ``off``; ``auto`` = the rule of ``predict``:
    shorter side > 2x the model input, or not square): every face is found, aligned (``align``, default true),
    cropped like the training data and scored; the most suspicious face decides the image (``decision_rule``
    ``max``, ``decided_by`` says which). Rows then add ``mode``, ``faces`` (box, crop, score, label, aligned,
    roll, warnings) and ``warnings``; whole-image rows are unchanged.

    When no file can be scored the answer is 415 (not an image) or 422 (empty, corrupt, bomb); when
    some can, 200 with ``error`` set on the others. Every scored image is recorded in the history.
    """
    svc = service_of(request)
    settings = svc.settings
    uploads, raw = await read_multipart(request, settings.max_file_bytes, settings.max_files, settings.body_timeout_s)
    if not uploads:
        raise HTTPException(422, "no files: upload images under the multipart field name 'files'")
    form = parse_form(raw)
    faces = parse_faces(raw.get("faces"))
    det = svc.detector
    thr = det.threshold if form.threshold is None else form.threshold
    if faces is True and (why := pipeline.faces_available()) is not None:
        raise HTTPException(501, f"face mode is not available on this server: {without_paths(why)}")
    # The one predict path: decode, whole image or faces, preprocess in threads (at most `decode_slots` at once);
    # one micro-batched forward pass for all of it; the same records as `dfdetect predict --json`.
    opts = pipeline.Options(faces=faces, threshold=form.threshold, align=form.align)
    pairs = await svc.decode_all(uploads, prepare_upload, det, opts)
    del uploads
    received = [r for r, _ in pairs]
    if all(r.error is not None for r in received):
        raise all_failed(received)
    arrays = [a for _, p in pairs for a in p.arrays]
    try:
        all_scores = await svc.batcher.score(arrays)
    except Exception as e:
        log.exception("inference failed")
        raise HTTPException(500, f"inference failed ({type(e).__name__})") from None
    records, pos = [], 0
    for _, p in pairs:
        records.append(pipeline.finish(det, p, all_scores[pos : pos + len(p.arrays)], opts))
        pos += len(p.arrays)
    scored = [(r, rec) for r, rec in zip(received, records) if rec.error is None]
    rows = [(r, rec.score, rec.label, thr) for r, rec in scored]
    extras = [face_extra(rec) if rec.mode == "faces" else None for _, rec in scored]
    ids = await svc.in_thread(svc.record, rows, form.case_id, "predict", det.model_id, extras)
    id_of = {id(r): i for (r, _), i in zip(scored, ids)}
    preds = [prediction_out(rec) for rec in records]
    return PredictResponse(predictions=preds, scan_ids=[id_of.get(id(r)) for r in received], case_id=form.case_id)
