"""Every metric from (y_true, y_score): pure functions over numpy arrays, fake = 1, score = P(fake).

The paper's columns (accuracy, precision, recall, F1, confusion matrix, classification report,
misclassification counts) plus the DeepfakeBench ones (ROC-AUC, AP, EER) and bootstrap 95% CIs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

CLASS_NAMES = ["real", "fake"]


def eer(y_true: np.ndarray, y_score: np.ndarray) -> tuple[float, float]:
    """Equal error rate and the threshold where FPR = FNR (interpolated on the ROC curve)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return float("nan"), float("nan")
    fpr, tpr, thr = skm.roc_curve(y_true, y_score)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    if i == 0:
        return float(fpr[0]), float(min(thr[0], 1.0))
    # Linear interpolation between the two ROC points that bracket FPR = FNR.
    d0, d1 = fpr[i - 1] - fnr[i - 1], fpr[i] - fnr[i]
    t = 0.0 if d1 == d0 else d0 / (d0 - d1)
    t = float(np.clip(t, 0.0, 1.0))
    rate = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    return float(rate), float(min(thr[i], 1.0))


def tpr_at_fpr(y_true: np.ndarray, y_score: np.ndarray, target_fpr: float) -> float:
    fpr, tpr, _ = skm.roc_curve(y_true, y_score)
    ok = fpr <= target_fpr
    return float(tpr[ok].max()) if ok.any() else 0.0


def compute_metrics(y_true: Any, y_score: Any, threshold: float = 0.5) -> dict[str, Any]:
    """All point metrics at ``threshold`` (predict fake when score >= threshold) plus ranking metrics."""
    y_true = np.asarray(y_true, dtype=int)
    y_score = np.asarray(y_score, dtype=float)
    y_pred = (y_score >= threshold).astype(int)
    both = len(np.unique(y_true)) == 2
    cm = skm.confusion_matrix(y_true, y_pred, labels=[0, 1])
    report = skm.classification_report(
        y_true, y_pred, labels=[0, 1], target_names=CLASS_NAMES, output_dict=True, zero_division=0
    )
    e, e_thr = eer(y_true, y_score)
    return {
        "n": int(len(y_true)),
        "n_real": int((y_true == 0).sum()),
        "n_fake": int((y_true == 1).sum()),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "roc_auc": float(skm.roc_auc_score(y_true, y_score)) if both else float("nan"),
        "average_precision": float(skm.average_precision_score(y_true, y_score)) if both else float("nan"),
        "eer": e,
        "eer_threshold": e_thr,
        "tpr_at_fpr_1pct": tpr_at_fpr(y_true, y_score, 0.01) if both else float("nan"),
        "confusion_matrix": cm.tolist(),
        "misclassified": {"real_as_fake": int(cm[0, 1]), "fake_as_real": int(cm[1, 0])},
        "classification_report": report,
    }


CI_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "eer", "tpr_at_fpr_1pct")


def bootstrap_ci(
    y_true: Any, y_score: Any, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, list[float]]:
    """Percentile bootstrap (1 - alpha) intervals, resampling images with replacement."""
    y_true = np.asarray(y_true, dtype=int)
    y_score = np.asarray(y_score, dtype=float)
    rng = np.random.default_rng(seed)
    n = len(y_true)
    samples: dict[str, list[float]] = {k: [] for k in CI_METRICS}
    y_pred = (y_score >= threshold).astype(int)
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        t, s, p = y_true[idx], y_score[idx], y_pred[idx]
        samples["accuracy"].append(float((t == p).mean()))
        tp = int(((p == 1) & (t == 1)).sum())
        fp = int(((p == 1) & (t == 0)).sum())
        fn = int(((p == 0) & (t == 1)).sum())
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        samples["precision"].append(prec)
        samples["recall"].append(rec)
        samples["f1"].append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
        if len(np.unique(t)) == 2:
            samples["roc_auc"].append(float(skm.roc_auc_score(t, s)))
            samples["average_precision"].append(float(skm.average_precision_score(t, s)))
            samples["eer"].append(eer(t, s)[0])
            samples["tpr_at_fpr_1pct"].append(tpr_at_fpr(t, s, 0.01))
    lo, hi = 100 * alpha / 2, 100 * (1 - alpha / 2)
    return {
        k: [float(np.percentile(v, lo)), float(np.percentile(v, hi))] if v else [float("nan")] * 2
        for k, v in samples.items()
    }


def choose_threshold(y_true: Any, y_score: Any, rule: str) -> float:
    """A decision threshold from validation scores: a number, 'eer', 'f1' (max F1) or 'fpr1' (FPR <= 1%)."""
    try:
        return float(rule)
    except ValueError:
        pass
    y_true = np.asarray(y_true, dtype=int)
    y_score = np.asarray(y_score, dtype=float)
    if rule == "eer":
        return eer(y_true, y_score)[1]
    if rule == "f1":
        prec, rec, thr = skm.precision_recall_curve(y_true, y_score)
        f1 = 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12)
        return float(thr[int(np.argmax(f1))])
    if rule == "fpr1":
        fpr, _, thr = skm.roc_curve(y_true, y_score)
        ok = np.where(fpr <= 0.01)[0]
        return float(min(thr[ok[-1]], 1.0))
    raise ValueError(f"threshold rule must be a number, 'eer', 'f1' or 'fpr1', not {rule!r}")
