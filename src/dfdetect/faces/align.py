"""Crop a detected face so it is framed like the training data (FFHQ-style aligned 256x256 crops).

Measured on the shared faces140k subset (200 real + 200 fake 256x256 crops, ``alt2`` cascade, see docs/faces.md):
the Haar box is ~0.656 of the crop's side and its centre sits ~0.047 of the side *below* the crop's centre
(horizontally centred). Inverting that: crop side = box side / 0.656, crop centre = box centre moved up by
0.047 x crop side. The crop is then resized to 256 (Lanczos, as the dataset was downsampled from FFHQ's
1024 px) and handed to the model's own preprocessing, so the model sees what it saw in training.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

TRAIN_CROP = 256
"""Side of the training crops; face crops are resized to this before the model's preprocessing."""
BOX_FRACTION = 0.656
"""Haar box side / crop side on the training crops (median)."""
BOX_CENTER_DY = 0.047
"""(box centre y - crop centre y) / crop side on the training crops (median; positive = box lower)."""


def crop_box(
    box: tuple[int, int, int, int], box_fraction: float = BOX_FRACTION, center_dy: float = BOX_CENTER_DY
) -> tuple[int, int, int, int]:
    """Detector box (x, y, w, h) -> square training-framed crop (left, top, right, bottom); may leave the image."""
    x, y, w, h = box
    side = max(w, h) / box_fraction
    cx = x + w / 2
    cy = y + h / 2 - center_dy * side
    left, top = round(cx - side / 2), round(cy - side / 2)
    s = round(side)
    return left, top, left + s, top + s


def crop_face(img: Image.Image, box: tuple[int, int, int, int], size: int = TRAIN_CROP) -> tuple[Image.Image, bool]:
    """The training-framed crop of ``box`` from RGB ``img``, resized to ``size``; True when it had to be padded
    (the face is near the border: missing pixels are mirrored from the image, as FFHQ's own alignment does)."""
    left, top, right, bottom = crop_box(box)
    w, h = img.size
    pad = max(0, -left, -top, right - w, bottom - h)
    if pad:
        arr = np.asarray(img.convert("RGB"))
        mode = "reflect" if pad < min(w, h) else "edge"
        arr = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode=mode)
        img = Image.fromarray(arr)
        left, top, right, bottom = left + pad, top + pad, right + pad, bottom + pad
    face = img.crop((left, top, right, bottom))
    if face.size != (size, size):
        face = face.resize((size, size), Image.Resampling.LANCZOS)
    return face, bool(pad)
