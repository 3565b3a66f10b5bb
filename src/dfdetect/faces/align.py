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

from dfdetect.faces.detect import eye_cascade, find_faces, opencv

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


# ---- eye-based in-plane alignment --------------------------------------------------------------------------
"""OpenCV's packaged eye cascade (in ``cv2.data.haarcascades`` of the 4.x wheels)."""
ALIGN_MIN_DEG = 3.0
"""Eyes within this many degrees of level are left as they are (no extra resampling for an upright face)."""
ALIGN_MAX_DEG = 30.0
"""Eye pairs tilted more than this are not trusted (two detections that are not the two eyes)."""


def find_eyes(img: Image.Image, box: tuple[int, int, int, int]) -> list[tuple[float, float, float]]:
    """Eye candidates (centre x, centre y, size) in image pixels, searched in the upper 65% of the face box."""
    cv2 = opencv()
    x, y, w, h = box
    W, H = img.size
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + round(0.65 * h))
    if x1 - x0 < 20 or y1 - y0 < 12:
        return []
    region = np.asarray(img.crop((x0, y0, x1, y1)).convert("L"))
    k = 200.0 / (x1 - x0)  # eyes are searched at a fixed face width: box 200 px wide
    region = cv2.resize(
        region, (200, max(1, round((y1 - y0) * k))), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    )
    region = cv2.equalizeHist(region)
    found = eye_cascade().detectMultiScale(region, scaleFactor=1.05, minNeighbors=3, minSize=(20, 20), maxSize=(80, 80))
    # OpenCV's parallel scan returns detections in a varying order; sorted, the same image gives the same list.
    return sorted(
        (x0 + (ex + ew / 2) / k, y0 + (ey + eh / 2) / k, ew / k) for ex, ey, ew, eh in np.asarray(found).reshape(-1, 4)
    )


def eye_roll(img: Image.Image, box: tuple[int, int, int, int]) -> float | None:
    """In-plane tilt of the face in degrees (positive: the eye on the image's right is lower), from the most
    plausible pair of Haar eye detections; None when no plausible pair is found.

    Where the eyes sit in an upright ``alt2`` box (measured on training crops): centres ~0.39 of the box height
    below its top, ~0.4 box widths apart, each ~0.2-0.3 box widths in size; eyebrows and nostrils also fire the
    eye cascade, higher or lower. A pair is plausible when each eye is 0.22-0.58 of the height down and 0.12-0.38
    of the width in size, one on each side of the centre line, 0.25-0.65 widths apart, tilted <= ``ALIGN_MAX_DEG``;
    the pair closest to the typical layout wins.
    """
    x, y, w, h = box
    eyes = [
        (ex, ey, es) for ex, ey, es in find_eyes(img, box) if 0.22 <= (ey - y) / h <= 0.58 and 0.12 <= es / w <= 0.38
    ]
    cx = x + w / 2
    best, best_cost = None, float("inf")
    for i, a in enumerate(eyes):
        for b in eyes[i + 1 :]:
            left, right = (a, b) if a[0] <= b[0] else (b, a)
            dx, dy = right[0] - left[0], right[1] - left[1]
            dist = float(np.hypot(dx, dy))
            if not (left[0] < cx < right[0]) or not (0.25 * w <= dist <= 0.65 * w):
                continue
            if max(a[2], b[2]) > 1.6 * min(a[2], b[2]):
                continue
            angle = float(np.degrees(np.arctan2(dy, dx)))
            mx, my = (left[0] + right[0]) / 2, (left[1] + right[1]) / 2
            if abs(angle) > ALIGN_MAX_DEG or abs(mx - cx) > 0.15 * w:
                continue
            cost = abs(mx - cx) / w + abs((my - y) / h - 0.39) + abs(dist / w - 0.40)
            if cost < best_cost:
                best, best_cost = angle, cost
    return best


def align_face(
    img: Image.Image, box: tuple[int, int, int, int], roll: float, size: int = TRAIN_CROP
) -> tuple[Image.Image, bool, tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Rotate the face in ``box`` by ``roll`` degrees so its eyes are level, re-find the face in the upright
    patch (the Haar box of an upright face is what the framing constants were measured on), then take the
    training-framed crop. Returns (crop resized to ``size``, padded, box in the rotated patch's frame mapped
    back to image coordinates (axis-aligned, same centre), crop square (left, top, right, bottom) likewise)."""

    x, y, w, h = box
    cx, cy = round(x + w / 2), round(y + h / 2)
    half = round(max(w, h) / BOX_FRACTION * 1.2)  # the window holds the rotated crop with room to spare
    win, _ = _window(img, cx - half, cy - half, 2 * half)
    # PIL rotates counter-clockwise for positive angles; a positive roll (right eye lower) needs exactly that.
    up = win.rotate(roll, resample=Image.Resampling.BICUBIC, center=(half, half))
    near = [
        f.box
        for f in find_faces(up, min_size=max(12, round(0.6 * min(w, h))))
        if abs(f.box[0] + f.box[2] / 2 - half) < 0.25 * w and abs(f.box[1] + f.box[3] / 2 - half) < 0.25 * h
    ]
    new = near[0] if near else (half - w // 2, half - h // 2, w, h)
    face, _ = crop_face(up, new, size)
    th = np.radians(roll)

    def to_image(px: float, py: float) -> tuple[float, float]:
        """A point of the upright window -> the image (undo the counter-clockwise rotation about the centre)."""
        u, v = px - half, py - half
        return cx + u * np.cos(th) - v * np.sin(th), cy + u * np.sin(th) + v * np.cos(th)

    bx, by = to_image(new[0] + new[2] / 2, new[1] + new[3] / 2)
    mapped = (round(bx - new[2] / 2), round(by - new[3] / 2), int(new[2]), int(new[3]))
    # Padded when the rotated crop square reaches outside the image (the window's own mirroring is harmless).
    left, top, right, bottom = crop_box(new)
    W, H = img.size
    corners = [to_image(px, py) for px in (left, right) for py in (top, bottom)]
    padded = any(not (-0.5 <= px <= W + 0.5 and -0.5 <= py <= H + 0.5) for px, py in corners)
    return face, padded, mapped, crop_box(mapped)


def _window(img: Image.Image, left: int, top: int, side: int) -> tuple[Image.Image, bool]:
    """The square (left, top, side) of ``img``, mirrored where it leaves the image; True when it had to be."""
    w, h = img.size
    pad = max(0, -left, -top, left + side - w, top + side - h)
    if not pad:
        return img.crop((left, top, left + side, top + side)), False
    arr = np.asarray(img.convert("RGB"))
    mode = "reflect" if pad < min(w, h) else "edge"
    arr = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode=mode)
    return Image.fromarray(arr).crop((left + pad, top + pad, left + pad + side, top + pad + side)), True
