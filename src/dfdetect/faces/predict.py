"""Face mode's image operations: find every face, crop it like the training data (eye-aligned when possible),
the automatic face-mode rule, and the JPEG quality estimate. Scoring the crops and the verdict (the most
suspicious face decides) live in the one predict path, ``dfdetect.runtime.pipeline``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from dfdetect.faces.align import TRAIN_CROP, crop_face
from dfdetect.faces.detect import find_faces

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
    """Detector box x, y, w, h (px of the input image; for an aligned face the upright box mapped back)."""
    crop: tuple[int, int, int, int]
    """The training-framed square that was scored: left, top, right, bottom (may extend past the image; for an
    aligned face the square before rotation, same centre and side)."""
    score: float
    neighbors: int
    aligned: bool = False
    """True when the tilt is known (two plausible eyes, else the rotated search's angle); the face was rotated
    upright before cropping when tilted >= ALIGN_MIN_DEG."""
    roll: float | None = None
    """Tilt in degrees (positive: the eye on the image's right is lower); None when unknown (not aligned)."""
    warnings: list[str] = field(default_factory=list)
    """This face's own warnings (small, at the border, not aligned)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": list(self.box),
            "crop": list(self.crop),
            "score": round(self.score, 6),
            "aligned": self.aligned,
            "roll": None if self.roll is None else round(self.roll, 1),
            "warnings": list(self.warnings),
        }


@dataclass
class FaceCrop:
    """One detected face, cropped with the training framing (and eye-aligned when possible), not yet scored."""

    box: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]
    image: Image.Image
    """The ``TRAIN_CROP`` px crop the model scores."""
    neighbors: int
    padded: bool
    aligned: bool
    roll: float | None
    rotated_search: bool = False
    """Found only by the rotated search (``ROTATED_SEARCH``), not by the upright one."""


@dataclass
class FaceResult:
    faces: list[FaceScore]
    score: float
    """P(fake) of the image: the maximum face score (the whole image's score when no face was found)."""
    label: str
    threshold: float
    decided_by: str
    warnings: list[str] = field(default_factory=list)
    decided: int | None = None
    """Index into ``faces`` of the face that decided (the most suspicious); None when no face was found."""
    crops: list[Image.Image] = field(default_factory=list, repr=False)
    """The crops that were scored, one per face (for explanations and reports)."""


def face_crops(img: Image.Image, min_face: int = MIN_FACE, align: bool = True) -> list[FaceCrop]:
    """Find the faces of one RGB image and crop each like the training data, largest first.

    ``align``: estimate each face's tilt from the eyes (``eye_roll``) and, when two plausible eyes are found and
    the tilt is at least ``ALIGN_MIN_DEG``, rotate the face upright before cropping (``align_face``). When the
    upright search finds no face, ``align`` also searches copies rotated by ``ROTATED_SEARCH`` degrees (the frontal
    cascade misses most faces tilted by 15-20 degrees); such a face is levelled by its eyes, or by the search angle
    when no eye pair is found.
    """
    from dfdetect.faces.align import ALIGN_MIN_DEG, align_face, crop_box, eye_roll

    img = img.convert("RGB")
    found: list[tuple[Any, float | None]] = [(f, None) for f in find_faces(img, min_size=min_face)]
    if not found and align:
        found = rotated_search(img, min_face)
    out = []
    for f, angle in found:
        roll = eye_roll(img, f.box) if align else None
        if roll is None and angle is not None:
            roll = angle
        if roll is not None and abs(roll) >= ALIGN_MIN_DEG:
            c, padded, box, crop = align_face(img, f.box, roll, TRAIN_CROP)
        else:
            c, padded = crop_face(img, f.box, TRAIN_CROP)
            box, crop = f.box, crop_box(f.box)
        out.append(FaceCrop(box, crop, c, f.neighbors, padded, roll is not None, roll, angle is not None))
    return out


ROTATED_SEARCH = (20.0, -20.0)
"""Angles (degrees, counter-clockwise) of the extra searches when the upright one finds no face."""
ROTATED_SEARCH_MAX_SIDE = 800
"""The rotated copies are searched at most this large (longest side): the extra searches cost ~1x the upright one."""


def rotated_search(img: Image.Image, min_face: int = MIN_FACE) -> list[tuple[Any, float]]:
    """Faces found in copies of ``img`` rotated by each ``ROTATED_SEARCH`` angle: (face with its box mapped back to
    ``img`` (axis-aligned, same centre and size), the angle = the face's roll in ``img``), largest first, with
    boxes found at both angles kept once."""
    from dfdetect.faces.detect import Face

    w, h = img.size
    hits: list[tuple[Any, float]] = []
    # Shrink before rotating: rotating a full-resolution photo (expand=True) first cost gigabytes on long images.
    k = min(1.0, ROTATED_SEARCH_MAX_SIDE / max(w, h))
    base = img.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.BILINEAR) if k < 1.0 else img
    for angle in ROTATED_SEARCH:
        rot = base.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
        th = np.radians(angle)
        for f in find_faces(rot, min_size=max(12, round(min_face * k))):
            x, y, bw, bh = (v / k for v in f.box)
            if min(bw, bh) < min_face:
                continue
            dx, dy = x + bw / 2 - rot.width / k / 2, y + bh / 2 - rot.height / k / 2
            cx = w / 2 + dx * np.cos(th) - dy * np.sin(th)
            cy = h / 2 + dx * np.sin(th) + dy * np.cos(th)
            box = (round(cx - bw / 2), round(cy - bh / 2), round(bw), round(bh))
            if not (0 <= cx < w and 0 <= cy < h):
                continue
            same = [i for i, (g, _) in enumerate(hits) if np.hypot(*np.subtract(_centre(g.box), (cx, cy))) < bw / 2]
            if same:
                if f.neighbors > hits[same[0]][0].neighbors:
                    hits[same[0]] = (Face(box, f.neighbors), angle)
                continue
            hits.append((Face(box, f.neighbors), angle))
    return sorted(hits, key=lambda t: -t[0].box[2] * t[0].box[3])


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2
