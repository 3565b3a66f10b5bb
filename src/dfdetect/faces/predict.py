"""Face mode: find every face, crop it like the training data, score each; the most suspicious face decides.

Warnings instead of silence: no face found (the whole image is scored instead, which the model was not
trained on), faces smaller than ``SMALL_FACE`` px (upsampled crops lose the artefacts the model looks for),
heavy JPEG compression (quality estimated from the luminance quantisation table), crops padded at the border.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dfdetect.data.io import ImageLoadError, open_image
from dfdetect.faces.align import TRAIN_CROP, crop_face
from dfdetect.faces.detect import FacesUnavailable, find_faces
from dfdetect.inference import Prediction, expand_paths

log = logging.getLogger(__name__)

MIN_FACE = 40
"""Smallest face box (px) the detector reports."""
SMALL_FACE = 100
"""Face boxes under this many px get a warning (their crop, ~1.5x the box, is upsampled > 1.7x to 256)."""
HEAVY_JPEG = 60
"""JPEG quality estimates under this get a warning (the training crops are quality-75 JPEGs)."""
AUTO_SCALE = 2.0
"""Auto face mode when the shorter side exceeds AUTO_SCALE x the model's input side ..."""
AUTO_ASPECT = 1.25
"""... or when the longer side exceeds AUTO_ASPECT x the shorter one (training crops are square)."""

# IJG (libjpeg) standard luminance quantisation table, natural order: quality q scales it by 5000/q or 200-2q %.
_IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip


def jpeg_quality(quantization: dict[int, Any] | None) -> int | None:
    """IJG-equivalent quality (1-100) from a JPEG's quantisation tables (``PIL.Image.quantization``); None if none.

    Exact for libjpeg/Pillow/OpenCV-encoded files; an approximation for encoders with their own tables.
    """
    if not quantization or 0 not in quantization:
        return None
    q = np.asarray(list(quantization[0]), dtype=np.float64)
    if q.size != 64:
        return None
    scale = float(np.mean(q * 100.0 / _IJG_LUMA))
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(min(100, max(1, round(quality))))


def auto_face_mode(size: tuple[int, int], data_config: dict[str, Any]) -> bool:
    """The automatic rule: face mode when the image is much larger than the model input or clearly not square."""
    w, h = size
    side = int(data_config["input_size"][-1])
    return min(w, h) > AUTO_SCALE * side or max(w, h) > AUTO_ASPECT * min(w, h)


@dataclass
class FaceScore:
    box: tuple[int, int, int, int]
    """Detector box x, y, w, h (px of the input image)."""
    crop: tuple[int, int, int, int]
    """The training-framed square that was scored: left, top, right, bottom (may extend past the image)."""
    score: float
    neighbors: int

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "crop": list(self.crop), "score": round(self.score, 6)}


@dataclass
class FaceResult:
    faces: list[FaceScore]
    score: float
    """P(fake) of the image: the maximum face score (the whole image's score when no face was found)."""
    label: str
    threshold: float
    decided_by: str
    warnings: list[str] = field(default_factory=list)


@dataclass
class FacePrediction(Prediction):
    """A ``Prediction`` from face mode: ``score`` is the most suspicious face's, plus the per-face rows."""

    mode: str = "faces"
    decided_by: str = ""
    faces: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def predict_faces(
    det: Any,
    img: Image.Image,
    threshold: float | None = None,
    min_face: int = MIN_FACE,
    small_face: int = SMALL_FACE,
    quality: int | None = None,
) -> FaceResult:
    """Score every face of one RGB image with detector ``det``; ``quality``: the file's JPEG quality if known."""
    from dfdetect.faces.align import crop_box

    thr = det.threshold if threshold is None else float(threshold)
    img = img.convert("RGB")
    warnings: list[str] = []
    if quality is not None and quality < HEAVY_JPEG:
        warnings.append(f"heavy JPEG compression (quality ~{quality} < {HEAVY_JPEG}): scores are less reliable")
    found = find_faces(img, min_size=min_face)
    if not found:
        warnings.append(f"no face found (frontal faces >= {min_face} px): scored the whole image instead")
        s = det.score_image(img)
        return FaceResult([], s, "fake" if s >= thr else "real", thr, "whole image (no face found)", warnings)
    crops, padded = [], 0
    for f in found:
        c, was_padded = crop_face(img, f.box, TRAIN_CROP)
        crops.append(det.preprocess(c))
        padded += was_padded
    scores = det.score_batch(np.stack(crops))
    faces = [FaceScore(f.box, crop_box(f.box), float(s), f.neighbors) for f, s in zip(found, scores)]
    small = [f for f in faces if min(f.box[2:]) < small_face]
    if small:
        sizes = ", ".join(str(min(f.box[2:])) for f in small)
        warnings.append(f"{len(small)} face(s) smaller than {small_face} px ({sizes} px): upsampled, less reliable")
    if padded:
        warnings.append(f"{padded} face(s) at the image border: crop padded by mirroring")
    top = max(range(len(faces)), key=lambda i: faces[i].score)
    decided = f"max of {len(faces)} face(s): face {top + 1} at {list(faces[top].box)}"
    s = faces[top].score
    return FaceResult(faces, s, "fake" if s >= thr else "real", thr, decided, warnings)


def _read(path: Path) -> tuple[Image.Image | None, str | None, int | None, str | None]:
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, None, None, f"{path}: cannot read ({e.strerror})"
    sha = hashlib.sha256(data).hexdigest()
    try:
        img = open_image(data)
    except ImageLoadError as e:
        return None, sha, None, str(e).replace("<bytes>", str(path))
    quality = None
    try:
        import io

        with Image.open(io.BytesIO(data)) as raw:
            if raw.format == "JPEG":
                quality = jpeg_quality(getattr(raw, "quantization", None))
    except Exception:  # noqa: BLE001 - a quality estimate is optional
        quality = None
    return img, sha, quality, None


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - unreadable files are reported by the normal path
        return None


def face_prediction(det: Any, path: str | Path, threshold: float | None = None, min_face: int = MIN_FACE) -> Prediction:
    """Face-mode ``Prediction`` for one file (errors come back in ``error``, as in ``Detector.predict``)."""
    path = Path(path)
    thr = det.threshold if threshold is None else float(threshold)
    img, sha, quality, err = _read(path)
    if err or img is None:
        return Prediction(str(path), sha, None, None, thr, det.model_id, err)
    r = predict_faces(det, img, threshold=thr, min_face=min_face, quality=quality)
    for w in r.warnings:
        log.warning("%s: %s", path, w)
    return FacePrediction(
        path=str(path),
        sha256=sha,
        label=r.label,
        score=round(r.score, 6),
        threshold=thr,
        model=det.model_id,
        decided_by=r.decided_by,
        faces=[f.to_dict() for f in r.faces],
        warnings=r.warnings,
    )


def predict_paths(
    det: Any,
    inputs: Iterable[str | Path],
    faces: bool | None = None,
    threshold: float | None = None,
    min_face: int = MIN_FACE,
    **predict_kwargs: Any,
) -> list[Prediction]:
    """``Detector.predict`` with face mode: ``faces`` True forces it, False disables it, None = the auto rule.

    Files that do not go to face mode are scored by ``det.predict`` unchanged (same ``Prediction`` rows).
    """
    files, missing = expand_paths(list(inputs))
    if missing:
        raise FileNotFoundError(f"no such file, folder or glob match: {', '.join(missing)}")
    if faces is False:
        return det.predict(files, threshold=threshold, **predict_kwargs)
    use = []
    for f in files:
        size = _image_size(f) if faces is None else None
        use.append(bool(faces) or (size is not None and auto_face_mode(size, det.data_config)))
    if faces is None and any(use):
        try:
            from dfdetect.faces.detect import _cascade

            _cascade()
        except FacesUnavailable as e:
            log.warning("automatic face mode is off: %s", e)
            use = [False] * len(files)
    whole = [f for f, u in zip(files, use) if not u]
    plain = iter(det.predict(whole, threshold=threshold, **predict_kwargs) if whole else [])
    return [face_prediction(det, f, threshold, min_face) if u else next(plain) for f, u in zip(files, use)]
