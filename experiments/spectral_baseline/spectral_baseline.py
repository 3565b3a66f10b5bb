"""Hand-made frequency / noise features vs the CNN: is there StyleGAN evidence in the spectrum of these JPEGs?

Per image (grayscale): the azimuthally averaged log power spectrum (128 radial bins, offset-normalised), three
statistics of a Laplacian high-pass residual and per-channel horizontal-gradient spreads; a logistic regression
and a gradient-boosted tree model trained on the v1 split's train rows, scored on valid and test (the
numbers recorded in the model card's "recipes tried").

    python experiments/spectral_baseline/spectral_baseline.py --data ../shared/data/faces140k-subset
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dfdetect.data.datasets import select_items
from dfdetect.data.io import open_image, to_rgb

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "dfdetect" / "weights"


def features(rgb: np.ndarray) -> np.ndarray:
    g = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    f = np.fft.fftshift(np.abs(np.fft.fft2(g - g.mean())))
    h, w = g.shape
    y, x = np.indices(f.shape)
    r = np.hypot(y - h / 2, x - w / 2).astype(int)
    profile = (np.bincount(r.ravel(), np.log1p(f).ravel()) / np.maximum(np.bincount(r.ravel()), 1))[: min(h, w) // 2]
    res = g - (np.roll(g, 1, 0) + np.roll(g, -1, 0) + np.roll(g, 1, 1) + np.roll(g, -1, 1)) / 4
    res = res[2:-2, 2:-2]
    kurt = ((res - res.mean()) ** 4).mean() / max(res.var(), 1e-12) ** 2
    grads = [np.diff(rgb[..., c].astype(np.float64), axis=1).std() for c in range(3)]
    return np.concatenate([profile - profile[:8].mean(), [res.std(), np.abs(res).mean(), kurt], grads])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/faces140k-subset"))
    ap.add_argument("--manifest", type=Path, default=WEIGHTS / "split-v1.csv")
    a = ap.parse_args()
    sets = {}
    for split in ("train", "valid", "test"):
        items, _ = select_items(a.data, split, a.manifest, None)
        x = np.stack([features(np.asarray(to_rgb(open_image(a.data / it.path)))) for it in items])
        sets[split] = (x, np.array([it.label for it in items]))
    models = {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000)),
        "gradient boosting": HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=0),
    }
    for name, clf in models.items():
        clf.fit(*sets["train"])
        aucs = [roc_auc_score(sets[s][1], clf.predict_proba(sets[s][0])[:, 1]) for s in ("valid", "test")]
        n_feat = sets["train"][0].shape[1]
        print(f"{name:20s} valid ROC-AUC {aucs[0]:.4f}  test ROC-AUC {aucs[1]:.4f}  ({n_feat} features)")


if __name__ == "__main__":
    main()
