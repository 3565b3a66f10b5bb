"""Haar pyramid step: the shipped ``scaleFactor`` 1.1 against a coarser 1.2, on faces_alignment.py's canvases.

The same 30 test-split crops (15 real, 15 fake) pasted at 300 px into 1024x768 noise canvases, upright and tilted
10/15/20 degrees; the shipped pipeline (eye alignment + rotated search) with ``find_faces`` at each scale factor,
alternating passes: time per canvas, faces found, extra boxes, median |face-mode score - crop score|.

    python experiments/faces_alignment/scale_factor.py --data ../shared/data/faces140k-subset [--passes 2]
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
from faces_alignment import TILTS, alignment_crops, canvas  # this folder's script: the same canvases
from PIL import Image

import dfdetect.faces.align as fa
import dfdetect.faces.detect as fd
import dfdetect.faces.predict as fp
from dfdetect.runtime.detector import Detector
from dfdetect.runtime.pipeline import predict_faces


def canvases(data: Path, det: Detector, per_class: int = 15) -> list[tuple[int, float, Image.Image]]:
    """(tilt, score of the crop itself, canvas) for every crop and tilt, as faces_alignment.py makes them."""
    out = []
    for i, p in enumerate(alignment_crops(data, per_class)):
        im = Image.open(p).convert("RGB")
        direct = det.score_image(im)
        out += [(mag, direct, canvas(im, i, mag if i % 2 == 0 else -mag)) for mag in TILTS]
    return out


def run(det: Detector, canv: list[tuple[int, float, Image.Image]], scale_factor: float) -> str:
    original = fd.find_faces
    patched = functools.partial(original, scale_factor=scale_factor)
    modules = (fd, fp, fa)  # every module that calls find_faces by name
    try:
        for m in modules:
            m.find_faces = patched
        t0 = time.perf_counter()
        per_tilt: dict[int, list[tuple[int, float | None]]] = {}
        for mag, direct, c in canv:
            r = predict_faces(det, c)
            per_tilt.setdefault(mag, []).append((len(r.faces), abs(r.score - direct) if r.faces else None))
        ms = (time.perf_counter() - t0) / len(canv) * 1e3
    finally:
        for m in modules:
            m.find_faces = original
    parts = []
    for mag, v in sorted(per_tilt.items()):
        d = [x for n, x in v if n and x is not None]
        extra = sum(max(0, n - 1) for n, _ in v)
        parts.append(f"{mag} deg: found {len(d)}/{len(v)}, extra {extra}, median |d| {np.median(d):.3f}")
    return f"scaleFactor {scale_factor}: {ms:.0f} ms/canvas; " + "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/faces140k-subset"))
    ap.add_argument("--model", default="default")
    ap.add_argument("--passes", type=int, default=2)
    a = ap.parse_args()
    det = Detector.load(a.model)
    canv = canvases(a.data, det)
    for _ in range(a.passes):
        for sf in (1.1, 1.2):
            print(run(det, canv, sf), flush=True)


if __name__ == "__main__":
    main()
