"""Face detection with weights that ship inside a pip package: OpenCV's Haar cascade (``frontalface_alt2``).

``opencv-python-headless`` 4.x ships the cascade XML files under ``cv2.data.haarcascades``. OpenCV 5.x moved
``CascadeClassifier`` out of the main package and its wheels carry no cascade files (``cv2.FaceDetectorYN``
is there but needs a YuNet ONNX file that no wheel ships), hence the ``<5`` pin of the ``faces`` extra.
``alt2`` rather than ``default``: on the training crops it misses as few faces and fires fewer duplicate boxes,
with a tighter box size (docs/faces.md has the numbers).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from dfdetect.core.errors import DfdetectError

CASCADE = "haarcascade_frontalface_alt2.xml"
EYE_CASCADE = "haarcascade_eye.xml"
DETECT_MAX_SIDE = 1280
"""Larger images are downscaled to this longest side for detection only (boxes map back to full resolution)."""


class FacesUnavailable(DfdetectError, RuntimeError):
    """opencv-python-headless (4.x, with its cascade files) is not installed."""


@dataclass
class Face:
    box: tuple[int, int, int, int]
    """x, y, width, height in pixels of the input image (the detector's box, before any margin)."""
    neighbors: int
    """Haar support (overlapping raw detections merged into this box): higher = more confident."""

    @property
    def size(self) -> int:
        return int(min(self.box[2], self.box[3]))


def opencv() -> Any:
    """OpenCV 4.x (``cv2``), or FacesUnavailable saying what to install."""
    try:
        import cv2
    except ImportError as e:
        raise FacesUnavailable(
            "face mode needs OpenCV: pip install 'opencv-python-headless>=4.8,<5' (or dfdetect[faces])"
        ) from e
    return cv2


_per_thread = threading.local()
"""OpenCV's CascadeClassifier keeps its scratch state (the scale pyramid) on the object, so two threads detecting
with one instance get each other's boxes or crash inside OpenCV; each thread (decode workers, the server's pool)
loads its own, once."""


def _load_cascade(name: str) -> Any:
    cv2 = opencv()
    root = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not hasattr(cv2, "CascadeClassifier") or not root:
        raise FacesUnavailable(
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 dropped them): "
            "pip install 'opencv-python-headless>=4.8,<5'"
        )
    clf = cv2.CascadeClassifier(root + name)
    if clf.empty():
        raise FacesUnavailable(f"cannot load {root + name}")
    return clf


def _thread_cascade(name: str) -> Any:
    clf = getattr(_per_thread, name, None)
    if clf is None:
        clf = _load_cascade(name)
        setattr(_per_thread, name, clf)
    return clf


def _cascade() -> Any:
    """This thread's face cascade."""
    return _thread_cascade(CASCADE)


def eye_cascade() -> Any:
    """This thread's eye cascade (used by alignment)."""
    return _thread_cascade(EYE_CASCADE)


@lru_cache(maxsize=1)
def faces_available() -> str | None:
    """None when face mode can run here (OpenCV 4.x with its face and eye cascades), else why not."""
    try:
        _cascade()
        eye_cascade()
    except FacesUnavailable as e:
        return str(e)
    return None


def find_faces(
    img: Image.Image | np.ndarray, min_size: int = 40, min_neighbors: int = 5, scale_factor: float = 1.1
) -> list[Face]:
    """Frontal faces in an RGB PIL image (or an RGB/gray uint8 array), largest first.

    ``min_size``: smallest face box (pixels of the input image) to report.
    """
    cv2 = opencv()
    arr = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img)
    gray = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY) if arr.ndim == 3 else arr
    h, w = gray.shape[:2]
    k = min(1.0, DETECT_MAX_SIDE / max(h, w))
    if k < 1.0:
        gray = cv2.resize(gray, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    ms = max(12, round(min_size * k))
    boxes, weights = _cascade().detectMultiScale2(
        gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(ms, ms)
    )
    faces = []
    for (x, y, bw, bh), n in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)):
        box = (round(x / k), round(y / k), round(bw / k), round(bh / k))
        if min(box[2], box[3]) >= min_size:
            faces.append(Face(box, int(round(float(n)))))
    return sorted(faces, key=lambda f: (-f.box[2] * f.box[3], f.box))  # ties by position: OpenCV's order varies
