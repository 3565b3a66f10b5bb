"""Write a "platform-processed" copy of a split: each image downscaled to 75% and re-saved as JPEG quality 60
with no metadata, as a social network might serve it. Used as the second folder of the cross-dataset report
(`dfdetect evaluate MODEL --data A --data B`) when no second face data set is at hand: it is a distribution shift
of the same faces, not a new generator. The default manifest is the v1 split (split-v1.csv, the one the recorded
cross-dataset figures used; the v2 split.csv is rooted at ../shared/data).

    python scripts/make_platform_copy.py --data ../shared/data/faces140k-subset --out runs/platform_test
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from dfdetect.data.datasets import select_items
from dfdetect.data.io import open_image

SPLIT = Path(__file__).resolve().parents[1] / "src" / "dfdetect" / "weights" / "split-v1.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/faces140k-subset"))
    ap.add_argument("--manifest", type=Path, default=SPLIT)
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", type=Path, default=Path("runs/platform_test"))
    ap.add_argument("--scale", type=float, default=0.75)
    ap.add_argument("--quality", type=int, default=60)
    a = ap.parse_args()
    items, source = select_items(a.data, a.split, a.manifest, None)
    for it in items:
        img = open_image(a.data / it.path)
        w, h = img.size
        img = img.resize((round(w * a.scale), round(h * a.scale)), Image.Resampling.BICUBIC)
        dst = a.out / ("fake" if it.label == 1 else "real") / (Path(it.path).stem + ".jpg")
        dst.parent.mkdir(parents=True, exist_ok=True)
        img.save(dst, "JPEG", quality=a.quality)
    print(f"{len(items)} images ({source}) -> {a.out} (x{a.scale}, JPEG q{a.quality})")


if __name__ == "__main__":
    main()
