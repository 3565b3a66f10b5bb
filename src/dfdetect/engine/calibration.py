"""Calibration: expected calibration error, reliability diagrams and temperature scaling (fake = 1).

Everything is about the score P(fake). For two classes, softmax(z / T)[1] = sigmoid((z1 - z0) / T), so the
logit margin ``d = z1 - z0`` is exactly ``log(p / (1 - p))`` and temperature scaling is a 1-D fit of T that
minimises the validation negative log-likelihood. NLL as a function of 1/T is convex, hence unimodal in
log T, and a golden-section search finds it without scipy.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from dfdetect.core.scores import logit as logits_from_probs
from dfdetect.core.scores import sigmoid

T_RANGE = (0.02, 50.0)


def _arrays(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and scores differ in length ({len(y)} vs {len(p)})")
    return y, p


def bin_stats(y: Any, p: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width bins of P(fake) on [0, 1]; bin i holds i/n <= p < (i+1)/n (the last also holds p = 1).

    Returns per-bin ``count``, ``mean_score`` (mean P(fake)) and ``frac_fake`` (fraction labelled fake);
    empty bins have NaN means.
    """
    y, p = _arrays(y, p)
    idx = np.clip(np.floor(p * n_bins).astype(int), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(idx, weights=p, minlength=n_bins) / count
        frac_fake = np.bincount(idx, weights=y, minlength=n_bins) / count
    return {"count": count, "mean_score": mean_score, "frac_fake": frac_fake, "edges": np.linspace(0, 1, n_bins + 1)}


def ece(y: Any, p: Any, n_bins: int = 15) -> float:
    """Expected calibration error of P(fake): sum over bins of (n_bin / N) * |fraction fake - mean P(fake)|.

    Equal-width bins on [0, 1] (see ``bin_stats``); 0 = perfectly calibrated. NaN for no samples.
    """
    s = bin_stats(y, p, n_bins)
    n = s["count"].sum()
    if n == 0:
        return float("nan")
    ok = s["count"] > 0
    return float(np.sum(s["count"][ok] / n * np.abs(s["frac_fake"][ok] - s["mean_score"][ok])))


def nll(y: Any, logits: Any, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of sigmoid(logits / T) against labels (numerically stable)."""
    y, d = _arrays(y, logits)
    z = d / float(temperature)
    # -log sigmoid(z) = logaddexp(0, -z); -log(1 - sigmoid(z)) = logaddexp(0, z)
    return float(np.mean(y * np.logaddexp(0.0, -z) + (1 - y) * np.logaddexp(0.0, z))) if len(y) else float("nan")


def fit_temperature(y: Any, logits: Any, t_range: tuple[float, float] = T_RANGE, tol: float = 1e-5) -> float:
    """The T in ``t_range`` minimising ``nll(y, logits, T)`` (golden-section search on log T).

    Never worse than T = 1 on the data it is fitted to: when the search ends above NLL(T=1) (only possible
    at the tolerance limit), 1.0 is returned.
    """
    y, d = _arrays(y, logits)
    if len(y) == 0:
        raise ValueError("no validation samples to fit a temperature on")
    a, b = math.log(t_range[0]), math.log(t_range[1])
    g = (math.sqrt(5) - 1) / 2
    c, e = b - g * (b - a), a + g * (b - a)
    fc, fe = nll(y, d, math.exp(c)), nll(y, d, math.exp(e))
    while b - a > tol:
        if fc <= fe:
            b, e, fe = e, c, fc
            c = b - g * (b - a)
            fc = nll(y, d, math.exp(c))
        else:
            a, c, fc = c, e, fe
            e = a + g * (b - a)
            fe = nll(y, d, math.exp(e))
    t = math.exp((a + b) / 2)
    return t if nll(y, d, t) <= nll(y, d, 1.0) else 1.0


def reliability_diagram(
    y: Any, p: Any, path: str | Path, n_bins: int = 15, title: str | None = None, extra: dict[str, Any] | None = None
) -> Path:
    """Reliability diagram of P(fake): fraction fake per bin vs mean P(fake), with bin counts below.

    ``extra``: optional ``{label: (y, p)}`` curves drawn on the same axes (e.g. before/after calibration).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {"model": (y, p)} if not extra else {**({"model": (y, p)} if p is not None else {}), **extra}
    fig, (ax, axh) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    width = 1.0 / n_bins
    for k, (label, (yy, pp)) in enumerate(curves.items()):
        s = bin_stats(yy, pp, n_bins)
        ok = s["count"] > 0
        e = ece(yy, pp, n_bins)
        ax.plot(s["mean_score"][ok], s["frac_fake"][ok], marker="o", label=f"{label} (ECE {e:.4f})")
        centres = s["edges"][:-1] + width / 2
        offset = (k - (len(curves) - 1) / 2) * width / max(len(curves), 1)
        axh.bar(centres + offset, s["count"], width=width / max(len(curves), 1), alpha=0.7, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction labelled fake")
    ax.set_title(title or "Reliability diagram")
    ax.legend(loc="upper left", fontsize=8)
    axh.set_xlabel("predicted P(fake)")
    axh.set_ylabel("images")
    axh.set_yscale("symlog")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def calibrate_scores(
    y: Any, logits: Any, target: str = "fpr1", n_bins: int = 15, t_range: tuple[float, float] = T_RANGE
) -> dict[str, Any]:
    """Fit T on (labels, logit margins), then choose the threshold for ``target`` on the calibrated scores.

    Returns temperature, threshold, and NLL/ECE before (T = 1) and after.
    """
    from dfdetect.core.metrics import choose_threshold

    y, d = _arrays(y, logits)
    t = fit_temperature(y, d, t_range)
    p0, p1 = sigmoid(d), sigmoid(d / t)
    thr = float(choose_threshold(y.astype(int), p1, target))
    return {
        "temperature": float(t),
        "threshold": thr,
        "warnings": calibration_warnings(y, float(t), thr, target, t_range),
        "target": str(target),
        "n": int(len(y)),
        "n_real": int((y == 0).sum()),
        "n_fake": int((y == 1).sum()),
        "nll_before": nll(y, d, 1.0),
        "nll_after": nll(y, d, t),
        "ece_before": ece(y, p0, n_bins),
        "ece_after": ece(y, p1, n_bins),
    }


MIN_REAL_FOR_FPR1 = 100
"""Below this many real validation images a 1% false-positive rate is not measurable (one real image is > 1%)."""


def calibration_warnings(
    y: np.ndarray, t: float, threshold: float, target: str, t_range: tuple[float, float] = T_RANGE
) -> list[str]:
    """Why a fitted calibration should not be trusted: the temperature at its search limit (the scores carry
    almost no information about the labels, or their order is reversed), a threshold that calls (almost) every
    image one class, a false-positive target the split is too small to measure."""
    out = []
    if t >= t_range[1] * 0.99 or t <= t_range[0] * 1.01:
        out.append(
            f"the temperature reached the end of its search range (T = {t:.4g}): on this validation split the "
            "model's scores say almost nothing about the labels, so the calibrated P(fake) is meaningless"
        )
    if threshold >= 0.999 or threshold <= 0.001:
        side = "real" if threshold >= 0.999 else "fake"
        out.append(f"the threshold {threshold:.4f} calls (almost) every image {side}")
    n_real = int((np.asarray(y) == 0).sum())
    if target == "fpr1" and n_real < MIN_REAL_FOR_FPR1:
        out.append(
            f"a 1% false-positive threshold needs >= {MIN_REAL_FOR_FPR1} real validation images, this split has "
            f"{n_real} (use --target eer or f1, or more validation data)"
        )
    return out


def validation_logits(
    checkpoint: str | Path,
    data: str | Path | None = None,
    manifest: str | Path | None = None,
    split: str = "valid",
    rescore: bool = False,
    device: str = "cpu",
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(labels, logit margins at T = 1, where they came from) for the validation split of a checkpoint.

    The checkpoint's ``valid_scores`` (P(fake) at T = 1, saved by training) are used unless ``rescore``; else
    the split is scored from ``manifest`` (default: the run's split.csv beside the checkpoint, whose root line
    names the data folder unless ``data`` is given), reading the exact logits from the model.
    """
    from dfdetect.data.datasets import read_manifest
    from dfdetect.data.io import ImageLoadError, open_image
    from dfdetect.models.checkpoint import load_checkpoint
    from dfdetect.runtime.detector import Detector

    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)
    vs = ckpt.get("valid_scores")
    if vs and not rescore and data is None and manifest is None:
        y = np.asarray(vs["labels"], dtype=int)
        return y, logits_from_probs(vs["scores"]), "the checkpoint's stored validation scores"
    man = Path(manifest) if manifest else checkpoint.parent / "split.csv"
    if not man.is_file():
        raise FileNotFoundError(
            f"{checkpoint} has no stored validation scores and no split manifest {man}; pass --manifest and --data"
        )
    if data is None:
        first = man.read_text().split("\n", 1)[0]
        if not first.startswith("# root: "):
            raise ValueError(f"{man} does not name its data folder; pass --data")
        data = Path(first[len("# root: ") :])
    items = [it for it in read_manifest(man) if it.split == split]
    if not items:
        raise ValueError(f"{man} has no {split!r} rows to calibrate on")
    det = Detector.load(checkpoint, device=device, backend="torch")
    labels: list[int] = []
    margins: list[float] = []
    for start in range(0, len(items), batch_size):
        arrs, ys = [], []
        for it in items[start : start + batch_size]:
            p = Path(it.path)
            try:
                arrs.append(det.preprocess(open_image(p if p.is_absolute() else Path(data) / p)))
                ys.append(it.label)
            except ImageLoadError as e:
                logging.getLogger(__name__).warning("skipping %s", e)
        if arrs:
            z = det.backend.logits(np.stack(arrs).astype(np.float32)).astype(np.float64)
            margins += (z[:, 1] - z[:, 0]).tolist()
            labels += ys
    return np.asarray(labels, dtype=int), np.asarray(margins), f"split {split!r} of {man}, rescored"


def calibrate_checkpoint(
    checkpoint: str | Path,
    out: str | Path | None = None,
    target: str = "fpr1",
    data: str | Path | None = None,
    manifest: str | Path | None = None,
    rescore: bool = False,
    device: str = "cpu",
    n_bins: int = 15,
) -> dict[str, Any]:
    """Temperature scaling + a threshold for ``target`` fitted on validation; write the calibrated checkpoint.

    The new checkpoint (a plain dict; .safetensors when ``out`` ends so) holds ``temperature``, ``threshold``,
    ``threshold_rule`` and a ``calibration`` summary, so ``Detector.load(out)`` and ``predict`` use them.
    A reliability diagram (before/after) and calibration.json are written beside it.
    """
    from dfdetect.models.checkpoint import load_checkpoint, save_checkpoint, save_safetensors

    checkpoint = Path(checkpoint)
    y, d, source = validation_logits(checkpoint, data, manifest, rescore=rescore, device=device)
    if len(np.unique(y)) < 2:
        raise ValueError("the validation split must hold both real and fake images to calibrate")
    res = calibrate_scores(y, d, target, n_bins)
    res["source"] = source
    ckpt = load_checkpoint(checkpoint)
    ckpt.pop("format", None)
    ckpt["temperature"] = res["temperature"]
    ckpt["threshold"] = res["threshold"]
    ckpt["threshold_rule"] = f"{target} (on the validation split, after temperature scaling T={res['temperature']:.4f})"
    ckpt["calibration"] = {k: v for k, v in res.items() if k != "threshold"}
    if out is None:
        out = checkpoint.with_name(f"{checkpoint.stem}_calibrated{checkpoint.suffix}")
    out = Path(out)
    if out.suffix == ".safetensors":
        out.parent.mkdir(parents=True, exist_ok=True)
        save_safetensors(ckpt, out)
    else:
        save_checkpoint(ckpt, out)
    fig = reliability_diagram(
        y,
        None,
        out.with_name(f"{out.stem}_reliability.png"),
        n_bins,
        title="Reliability on the validation split",
        extra={"T = 1": (y, sigmoid(d)), f"T = {res['temperature']:.3f}": (y, sigmoid(d / res["temperature"]))},
    )
    res["checkpoint"] = str(out)
    res["reliability_png"] = str(fig)
    # Written all the same (the user asked for it), but never silently: the CLI prints these, the JSON keeps them.
    import json

    out.with_name(f"{out.stem}_calibration.json").write_text(json.dumps(res, indent=2))
    return res
