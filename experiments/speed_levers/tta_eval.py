"""Horizontal-flip test-time augmentation for the 320 px ONNX model (`large`): mean P(fake) of the image and its mirror,
scored on the v1 split's validation and test images (numbers recorded in the model card).

    python experiments/speed_levers/tta_eval.py --data ../shared/data/faces140k-subset
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from sklearn.metrics import roc_auc_score

from dfdetect.data.datasets import select_items
from dfdetect.data.io import open_image
from dfdetect.data.preprocess import preprocess

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "dfdetect" / "weights"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/faces140k-subset"))
    ap.add_argument("--model", type=Path, default=WEIGHTS / "large.onnx")
    ap.add_argument("--manifest", type=Path, default=WEIGHTS / "split-v1.csv")
    a = ap.parse_args()
    sess = ort.InferenceSession(str(a.model), providers=["CPUExecutionProvider"])
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["dfdetect"])
    dc, thr, name = meta["data_config"], float(meta["threshold"]), sess.get_inputs()[0].name

    def score(x: np.ndarray) -> np.ndarray:
        out = np.concatenate([sess.run(None, {name: x[i : i + 32]})[0] for i in range(0, len(x), 32)])
        if out.shape[1] == 1:
            return 1 / (1 + np.exp(-out[:, 0]))
        e = np.exp(out - out.max(1, keepdims=True))
        return e[:, 1] / e.sum(1)

    for split in ("valid", "test"):
        items, _ = select_items(a.data, split, a.manifest, None)
        x = np.stack([preprocess(open_image(a.data / it.path), dc) for it in items]).astype(np.float32)
        y = np.array([it.label for it in items])
        plain = score(x)
        tta = (plain + score(np.ascontiguousarray(x[..., ::-1]))) / 2
        for label, p in (("plain", plain), ("hflip TTA", tta)):
            acc = ((p >= thr) == y).mean()
            print(f"{split:5s} {label:9s} n={len(y)} accuracy {acc:.4f} ROC-AUC {roc_auc_score(y, p):.4f}")


if __name__ == "__main__":
    main()
