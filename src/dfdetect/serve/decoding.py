"""Uploads through the one predict path's decoder (``dfdetect.runtime.pipeline.decode_bytes`` / ``prepare``), plus
what only the server needs: a per-file HTTP status and the answer when no file of a request could be used.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from PIL import Image

from dfdetect.runtime import pipeline
from dfdetect.serve.uploads import Upload

log = logging.getLogger(__name__)

MAX_RENDER_SIDE = 1024
NOT_AN_IMAGE = "not an image or unsupported format"
"""The tail of ``dfdetect.data.io.open_image``'s message for bytes no decoder recognises (-> 415)."""


@dataclass
class Received:
    """One uploaded file as the server saw it: what the history records (hash, name, size, dimensions) and the
    bytes the image store keeps (the upload's own object, not a copy)."""

    name: str
    sha256: str | None
    size: int
    data: bytes
    width: int | None = None
    height: int | None = None
    error: str | None = None
    status: int = 200
    """HTTP status this file alone would get: 200, 415 (not an image), 422 (empty, corrupt, bomb, or the face
    search / preprocessing failed on it)."""


def status_of(error: str) -> int:
    return 415 if error.endswith(NOT_AN_IMAGE) else 422


def decode_upload(up: Upload) -> tuple[Received, pipeline.Decoded]:
    """Hash and decode one upload with ``pipeline.decode_bytes``. Never raises."""
    r = Received(up.name, None, len(up.data), up.data)
    try:
        d = pipeline.decode_bytes(up.data, up.name)
    except Exception as e:  # anything Pillow throws on hostile input that open_image does not turn into its error
        log.warning("could not decode %s: %r", up.name, e)
        why = f"{up.name}: could not process image ({type(e).__name__})"
        d = pipeline.Decoded(up.name, hashlib.sha256(up.data).hexdigest(), error=why)
    r.sha256 = d.sha256
    if d.image is not None:
        r.width, r.height = d.image.size
    if d.error is not None:
        r.error, r.status = d.error, status_of(d.error)
    return r, d


def prepare_upload(up: Upload, scorer: Any, opts: pipeline.Options) -> tuple[Received, Any]:
    """One upload through the pipeline's preparation (in a worker thread): decode, whole image or faces, crops,
    arrays. The decoded image stays with the prepared input until ``pipeline.finish`` (it tells a decoded input
    from a failed one by it)."""
    r, d = decode_upload(up)
    prepared = pipeline.prepare(scorer, d, opts)
    if d.error and not r.error:  # the face search or preprocessing failed on this file
        r.error, r.status = d.error, 422
    return r, prepared


# ---- answers --------------------------------------------------------------------------------------
def all_failed(received: Sequence[Received]) -> HTTPException:
    """The answer when no file of a request could be used: their common status (415, 422), else 422."""
    statuses = {r.status for r in received}
    status = statuses.pop() if len(statuses) == 1 else 422
    if len(received) == 1:
        return HTTPException(status, received[0].error)
    return HTTPException(status, [{"path": r.name, "error": r.error} for r in received])


def png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def small_copy(img: Image.Image) -> Image.Image:
    """A copy at most ``MAX_RENDER_SIDE`` px on its longer side (the PNGs in answers stay small)."""
    img = img.copy()
    img.thumbnail((MAX_RENDER_SIDE, MAX_RENDER_SIDE))
    return img
