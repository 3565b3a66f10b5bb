"""Copy a few TEST-split images into examples/ for the README's main job.

Candidates come from the shipped model's test split (never trained on or used for selection), in a
seeded random order; by default only images the shipped model classifies correctly are kept, and
examples/README.md says so and quotes the model's test accuracy, so the demo is honest about it.
    python scripts/pick_examples.py --data ../shared/data --source faces140k-subset --per-class 3
    python scripts/pick_examples.py --data ../shared/data --source lfw-faceswap --per-class 1 --into faceswap
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from dfdetect.data.datasets import read_manifest
from dfdetect.runtime.detector import WEIGHTS_DIR, Detector

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--source", default=None, help="Only test images of this data folder (the manifest's source).")
    ap.add_argument("--into", default="", help="Sub-folder of examples/ to copy into (e.g. faceswap).")
    a = ap.parse_args()
    det = Detector.load()
    test = [it for it in read_manifest(WEIGHTS_DIR / "split.csv") if it.split == "test"]
    if a.source:
        test = [it for it in test if it.source == a.source]
    random.Random(a.seed).shuffle(test)
    out = ROOT / "examples" / a.into
    picked: dict[str, list[str]] = {"real": [], "fake": []}
    seen = 0
    for it in test:
        cls = "fake" if it.label == 1 else "real"
        if len(picked[cls]) >= a.per_class:
            continue
        seen += 1
        p = det.predict([a.data / it.path])[0]
        if p.label == cls:
            (out / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy(a.data / it.path, out / cls / Path(it.path).name)
            picked[cls].append(Path(it.path).name)
        if all(len(v) >= a.per_class for v in picked.values()):
            break
    print(f"examined {seen} test images in seeded order, kept {sum(map(len, picked.values()))}: {picked}")


if __name__ == "__main__":
    main()
