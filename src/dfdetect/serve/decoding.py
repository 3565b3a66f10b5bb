"""Uploads through the one predict path's decoder (``dfdetect.runtime.pipeline.decode_bytes`` / ``prepare``), plus
what only the server needs: a per-file HTTP status, the per-request pixel budget, and the answer when no file of a
request could be used.

The budget is spent in upload order on the sizes the image headers declare, before any pixel is decoded, so the
same request always has the same files refused; a file the decoder would refuse anyway (over the per-file bomb or
aspect-ratio limit, or no readable header) spends nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from PIL import Image

from dfdetect.data.io import MAX_ASPECT, MAX_PIXELS
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
    """HTTP status this file alone would get: 200, 413 (past the request's pixel budget), 415 (not an image),
    422 (empty, corrupt, bomb, or the face search / preprocessing failed on it)."""


def status_of(error: str) -> int:
    return 415 if error.endswith(NOT_AN_IMAGE) else 422


def decode_upload(up: Upload, refused: str | None = None) -> tuple[Received, pipeline.Decoded]:
    """Hash and decode one upload with ``pipeline.decode_bytes``. Never raises. ``refused``: the file is not
    decoded at all (over the request's pixel budget): this error, 413."""
    r = Received(up.name, None, len(up.data), up.data)
    if refused is not None:
        r.sha256 = hashlib.sha256(up.data).hexdigest()
        r.error, r.status = refused, 413
        return r, pipeline.Decoded(up.name, r.sha256, error=refused)
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


def prepare_upload(up: Upload, scorer: Any, opts: pipeline.Options, refused: str | None = None) -> tuple[Received, Any]:
    """One upload through the pipeline's preparation (in a worker thread): decode, whole image or faces, crops,
    arrays. The decoded full-resolution image is dropped once the arrays are made (``pipeline.prepare``), so a
    request waiting for the batcher holds model-input-sized arrays, not its decoded uploads."""
    r, d = decode_upload(up, refused)
    prepared = pipeline.prepare(scorer, d, opts)
    if d.error and not r.error:  # the face search or preprocessing failed on this file
        r.error, r.status = d.error, 422
    return r, prepared


# ---- the pixel budget -----------------------------------------------------------------------------
def header_pixels(data: bytes) -> int:
    """Pixels the image header declares; 0 when the decoder will refuse the file without decoding it (no
    readable header, over ``MAX_PIXELS`` or ``MAX_ASPECT``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:  # header only
                w, h = im.size
    except Exception:  # noqa: BLE001 - not an image / a bomb Pillow refuses: the decoder says why
        return 0
    if w * h > MAX_PIXELS or min(w, h) < 1 or max(w, h) > MAX_ASPECT * min(w, h):
        return 0
    return w * h


def over_budget(uploads: Sequence[Upload], max_pixels: int) -> list[str | None]:
    """Per upload, in order: None (decode it) or why it is refused (it would take the request past ``max_pixels``
    decoded pixels). The budget is spent in upload order; a refused file spends nothing."""
    out: list[str | None] = []
    spent = 0
    for up in uploads:
        px = header_pixels(up.data)
        if px and spent + px > max_pixels:
            out.append(
                f"{up.name}: {px / 1e6:.1f} Mpx would take this request past its decode budget of "
                f"{max_pixels / 1e6:g} Mpx (send it in another request)"
            )
        else:
            spent += px
            out.append(None)
    return out


# ---- answers --------------------------------------------------------------------------------------
def all_failed(received: Sequence[Received]) -> HTTPException:
    """The answer when no file of a request could be used: their common status (413, 415, 422), else 422."""
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
