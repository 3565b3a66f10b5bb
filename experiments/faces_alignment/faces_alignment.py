"""Face-mode alignment check behind the table in docs/faces.md.

The first 15 real and 15 fake test-split crops of the v1 split (split-v1.csv), each pasted at 300 px into a
1024x768 noise canvas at (400, 200), upright and rotated about the face centre by 10, 15 and 20 degrees (sign
alternating per image). For three settings — off (no alignment), eyes (eye alignment, no rotated search) and
full (eye alignment + rotated search, the default) — it prints, for `large` on ONNX Runtime, how many faces were
found and |face-mode score - score of the crop itself| (mean / median / max / verdict flips).

    python experiments/faces_alignment/faces_alignment.py --data ../shared/data/faces140k-subset [--json results.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

import dfdetect.faces.predict as fp
from dfdetect.data.datasets import select_items
from dfdetect.runtime.detector import Detector

SPLIT = Path(__file__).resolve().parents[2] / "src" / "dfdetect" / "weights" / "split-v1.csv"


TILTS = (0, 10, 15, 20)


def alignment_crops(data: Path, per_class: int = 15) -> list[Path]:
    """The first ``per_class`` real, then fake, test-split crops of the v1 split."""
    items, _ = select_items(data, "test", SPLIT, None)
    files = [data / it.path for it in items if it.label == 0][:per_class]
    return files + [data / it.path for it in items if it.label == 1][:per_class]


def canvas(im: Image.Image, i: int, angle: float) -> Image.Image:
    """Crop ``i`` pasted at 300 px into its 1024x768 noise canvas at (400, 200), rotated ``angle`` about the face."""
    noise = np.random.default_rng(i).normal(128, 20, (768, 1024, 3))
    c = Image.fromarray(noise.clip(0, 255).astype(np.uint8))
    c.paste(im.resize((300, 300), Image.Resampling.LANCZOS), (400, 200))
    return c.rotate(angle, resample=Image.Resampling.BICUBIC, center=(550, 350)) if angle else c


def measure(data: Path, per_class: int = 15) -> list[dict]:
    det = Detector.load("large", backend="onnx")
    full = fp.ROTATED_SEARCH
    out = []
    for i, p in enumerate(alignment_crops(data, per_class)):
        im = Image.open(p).convert("RGB")
        direct = det.score_image(im)
        for mag in TILTS:
            ang = mag if i % 2 == 0 else -mag
            c = canvas(im, i, ang)
            rec = {"path": p.name, "angle": ang, "direct": direct}
            try:
                for name, align, search in (("off", False, full), ("eyes", True, ()), ("full", True, full)):
                    fp.ROTATED_SEARCH = search
                    r = fp.predict_faces(det, c, align=align)
                    f = r.faces[r.decided] if r.faces else None
                    rec[name] = r.score if f else None
                    rec[name + "_roll"] = f.roll if f else None
                    rec[name + "_n"] = len(r.faces)
            finally:
                fp.ROTATED_SEARCH = full
            out.append(rec)
    return out


def summary(out: list[dict], thr: float) -> str:
    def stats(recs: list[dict], k: str) -> str:
        d = np.array([abs(r[k] - r["direct"]) for r in recs])
        flips = sum((r[k] >= thr) != (r["direct"] >= thr) for r in recs)
        return f"{d.mean():.3f} / {np.median(d):.3f} / {d.max():.3f}, {flips}" if len(d) else "-"

    lines = [
        "| tilt | images | faces found off / full | off: mean / median / max, flips | eyes | full (default) |",
        "|---|---|---|---|---|---|",
    ]
    for mag in TILTS:
        recs = [r for r in out if abs(r["angle"]) == mag]
        common = [r for r in recs if r["off_n"] > 0]
        eyes = [r for r in recs if r["eyes_n"] > 0]
        full = [r for r in recs if r["full_n"] > 0]
        lines.append(
            f"| {mag} | {len(recs)} | {len(common)} / {len(full)} | {stats(common, 'off')} | "
            f"{stats(eyes, 'eyes')} | {stats(full, 'full')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/faces140k-subset"))
    ap.add_argument("--json", type=Path, default=None, help="Also write every record here.")
    a = ap.parse_args()
    out = measure(a.data)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    print(summary(out, Detector.load("large", backend="onnx").threshold))


if __name__ == "__main__":
    main()
