"""Score the 320 px detector (`large`) on the v1 split at other input sizes than the one it was trained at (the speed
lever behind the 60 images/s target: cost grows with the square of the side). Recorded in the model card.

    python experiments/speed_levers/input_size_eval.py --data ../shared/data/faces140k-subset --sizes 224,256,288,320
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from dfdetect.data.datasets import select_items
from dfdetect.data.io import open_image
from dfdetect.data.preprocess import preprocess
from dfdetect.runtime.detector import Detector

SPLIT = Path(__file__).resolve().parents[2] / "src" / "dfdetect" / "weights" / "split-v1.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/faces140k-subset"))
    ap.add_argument("--sizes", default="224,256,288,320")
    ap.add_argument("--split", default="valid")
    a = ap.parse_args()
    det = Detector.load("large", backend="torch")
    items, _ = select_items(a.data, a.split, SPLIT, None)
    imgs = [open_image(a.data / it.path) for it in items]
    y = np.array([it.label for it in items])
    for side in (int(s) for s in a.sizes.split(",")):
        dc = {**det.data_config, "input_size": [3, side, side], "resize": side}
        x = np.stack([preprocess(im, dc) for im in imgs]).astype(np.float32)
        p = np.concatenate([det.score_batch(x[i : i + 32]) for i in range(0, len(x), 32)])
        acc = ((p >= det.threshold) == y).mean()
        print(f"{a.split} at {side} px: n={len(y)} accuracy {acc:.4f} ROC-AUC {roc_auc_score(y, p):.4f}")


if __name__ == "__main__":
    main()
