"""Small image helpers for the report: a perceptual colormap without pyplot, PNG data URIs."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

# inferno, 9 anchors (matplotlib's values), linearly interpolated: enough for a heat map in a report
_ANCHORS = np.array(
    [
        [0, 0, 4], [31, 12, 72], [85, 15, 109], [136, 34, 106], [186, 54, 85],
        [227, 89, 51], [249, 140, 10], [249, 201, 50], [252, 255, 164],
    ],
    dtype=np.float32,
)  # fmt: skip


def colormap(v: np.ndarray) -> Image.Image:
    """Values in [0, 1] -> RGB image (inferno-like)."""
    v = np.clip(np.nan_to_num(v.astype(np.float32)), 0, 1) * (len(_ANCHORS) - 1)
    i = np.minimum(v.astype(int), len(_ANCHORS) - 2)
    t = (v - i)[..., None]
    rgb = _ANCHORS[i] * (1 - t) + _ANCHORS[i + 1] * t
    return Image.fromarray(rgb.astype(np.uint8), mode="RGB")


def fit(img: Image.Image, max_side: int = 640) -> Image.Image:
    """Downscale for display only (never for analysis)."""
    if max(img.size) <= max_side:
        return img
    out = img.copy()
    out.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return out


def data_uri(img: Image.Image, max_side: int = 640) -> str:
    buf = io.BytesIO()
    fit(img, max_side).save(buf, "PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
