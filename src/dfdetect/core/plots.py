"""Figures (matplotlib, Agg backend): training curves, confusion matrix, misclassifications, ROC."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def training_curves(history: Sequence[dict[str, Any]], path: str | Path, best_epoch: int | None = None) -> Path:
    """Loss, accuracy and F1 per epoch, train vs validation, best epoch marked (paper Figures 3-8)."""
    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [("loss", "train_loss", "valid_loss"), ("accuracy", "train_acc", "valid_acc"), ("F1", None, "valid_f1")]
    for ax, (title, tr, va) in zip(axes, panels):
        if tr:
            ax.plot(ep, [h[tr] for h in history], "o-", label="train")
        ax.plot(ep, [h[va] for h in history], "s-", label="valid")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="gray", ls="--", lw=1, label=f"best (epoch {best_epoch})")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def confusion_matrix(cm: Sequence[Sequence[int]], path: str | Path, classes: Sequence[str] = ("real", "fake")) -> Path:
    cm_arr = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(cm_arr, cmap="Blues")
    for i in range(cm_arr.shape[0]):
        for j in range(cm_arr.shape[1]):
            color = "white" if cm_arr[i, j] > cm_arr.max() / 2 else "black"
            ax.text(j, i, str(cm_arr[i, j]), ha="center", va="center", color=color, fontsize=14)
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def misclassifications(misclassified: dict[str, int], path: str | Path) -> Path:
    """Bar chart of errors per kind (paper Figure 12)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    names = ["real as fake", "fake as real"]
    vals = [misclassified["real_as_fake"], misclassified["fake_as_real"]]
    bars = ax.bar(names, vals, color=["#4c72b0", "#dd8452"])
    ax.bar_label(bars)
    ax.set_ylabel("images")
    ax.set_title("Misclassified images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def roc(
    y_true: Sequence[int], y_score: Sequence[float], auc: float, path: str | Path, eer: float | None = None
) -> Path:
    fpr, tpr, _ = roc_curve(y_true, y_score)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=2, label=f"ROC (AUC = {auc:.4f})")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    if eer is not None and not np.isnan(eer):
        ax.plot([eer], [1 - eer], "ro", label=f"EER = {eer:.4f}")
    ax.set_xlabel("false positive rate (real flagged fake)")
    ax.set_ylabel("true positive rate (fake caught)")
    ax.set_title("ROC curve")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def learning_curve(
    rows: Sequence[dict[str, Any]],
    path: str | Path,
    parts: Sequence[str],
    reference: tuple[float, float, str] | None = None,
) -> Path:
    """Accuracy, ROC-AUC and TPR at 1% FPR against training-set size (log x), one line per data part, 95% CIs
    as error bars; ``reference`` = (n, accuracy, label) draws a published figure on the accuracy panel."""
    metrics = [("accuracy", "accuracy"), ("roc_auc", "ROC-AUC"), ("tpr_at_fpr_1pct", "TPR at 1% FPR")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharex=True)
    for ax, (key, title) in zip(axes, metrics):
        for part in parts:
            pts = [(r["n_train"], r[part]) for r in rows if part in r]
            if not pts:
                continue
            x = [p[0] for p in pts]
            y = [p[1][key] for p in pts]
            ci = [p[1].get("ci95", {}).get(key) or [v, v] for p, v in zip(pts, y)]
            err = np.array([[v - c[0] for v, c in zip(y, ci)], [c[1] - v for v, c in zip(y, ci)]])
            ax.errorbar(x, y, yerr=np.clip(err, 0, None), marker="o", capsize=3, label=part)
        if key == "accuracy" and reference is not None:
            n, acc, label = reference
            ax.scatter([n], [acc], marker="*", s=160, color="black", zorder=5, label=label)
            ax.axhline(acc, color="black", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("training images (log scale)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
