"""Fitting an ensemble of trained checkpoints on the validation split and saving it as one checkpoint.

The model it builds and its combination rules are ``dfdetect.models.ensemble``; see that module's docstring.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dfdetect.core.scores import with_temperature
from dfdetect.models.ensemble import EPS, METHODS, combine, logit

log = logging.getLogger(__name__)


def fit_weights(p: np.ndarray, y: np.ndarray) -> list[float]:
    """Simplex weights minimising the log-loss of ``sum_i w_i p_i`` (softmax parametrisation, L-BFGS)."""
    from scipy.optimize import minimize

    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(y, dtype=np.float64)

    def loss(a: np.ndarray) -> float:
        w = np.exp(a - a.max())
        w /= w.sum()
        q = np.clip(p @ w, EPS, 1 - EPS)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    res = minimize(loss, np.zeros(p.shape[1]), method="L-BFGS-B")
    w = np.exp(res.x - res.x.max())
    return [float(v) for v in w / w.sum()]


def fit_stacker(p: np.ndarray, y: np.ndarray, c: float = 1.0) -> tuple[list[float], float]:
    """Logistic regression on the members' logit(P(fake)): (coefficients, intercept)."""
    from sklearn.linear_model import LogisticRegression

    x = logit(torch.as_tensor(np.asarray(p, dtype=np.float64))).numpy()
    lr = LogisticRegression(C=c, max_iter=1000).fit(x, np.asarray(y, dtype=int))
    return [float(v) for v in lr.coef_[0]], float(lr.intercept_[0])


def member_valid_scores(
    ckpt: dict[str, Any], data: Path, items: list[Any], device: torch.device, batch_size: int, workers: int
) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """(labels, P(fake), paths) of one member on the given items, with the member's own preprocessing."""
    from dfdetect.data.datasets import ImageDataset, make_loader
    from dfdetect.data.transforms import eval_transform
    from dfdetect.engine.evaluate import score_loader
    from dfdetect.models.factory import model_from_checkpoint

    model = model_from_checkpoint(ckpt).to(device)
    ds = ImageDataset(items, data, eval_transform(ckpt["data_config"]))
    res = score_loader(model, make_loader(ds, batch_size, False, workers), device, False, "valid")
    t = float(ckpt.get("temperature", 1.0))
    scores = res["scores"]
    scores = with_temperature(scores, t)  # score_loader applies no temperature: redo it from the logit
    return res["labels"], scores, [ds.items[i].path for i in res["index"]]


def _stored_valid_scores(
    ckpt: dict[str, Any], items: list[Any], split_hash: str
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """A member's stored validation scores when they belong to exactly these valid rows, else None."""
    vs = ckpt.get("valid_scores")
    if not vs or ckpt.get("split_sha256") != split_hash:
        return None
    labels = [int(v) for v in vs["labels"]]
    if labels != [int(it.label) for it in items]:
        return None
    scores = np.asarray(vs["scores"], dtype=np.float64)
    t = float(ckpt.get("temperature", 1.0))
    scores = with_temperature(scores, t)
    return np.asarray(labels), scores, [it.path for it in items]


def build_ensemble(
    checkpoints: list[str | Path],
    data: str | Path,
    out: str | Path,
    method: str = "mean",
    manifest: str | Path | None = None,
    threshold: str = "0.5",
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 2,
    stored_valid_scores: bool = False,
) -> dict[str, Any]:
    """Fit (on the manifest's valid split) and save an ensemble checkpoint. Returns a summary dict.

    ``stored_valid_scores``: use a member's own ``valid_scores`` (written by ``train`` for its best epoch) instead
    of scoring the validation split again, when it was trained on this split and its labels line up with the
    manifest's valid rows (saves one inference pass per member; a GPU-trained member's stored scores come from
    bf16 autocast, so they differ slightly from CPU fp32 scores).
    """
    from dfdetect.core.device import resolve_device
    from dfdetect.core.metrics import choose_threshold, compute_metrics
    from dfdetect.data.datasets import manifest_hash, read_manifest
    from dfdetect.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from dfdetect.models.factory import CLASSES, head_of

    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    if len(checkpoints) < 2:
        raise ValueError("an ensemble needs at least two checkpoints")
    paths = [Path(c) for c in checkpoints]
    ckpts = [load_checkpoint(p) for p in paths]
    if any(c.get("kind") == "ensemble" for c in ckpts):
        raise CheckpointError("ensemble members must be single models, not ensembles")
    manifest = Path(manifest) if manifest else paths[0].parent / "split.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"no split manifest: pass --manifest (looked for {manifest})")
    items = [it for it in read_manifest(manifest) if it.split == "valid"]
    if not items or len({it.label for it in items}) < 2:
        raise ValueError(f"the valid split of {manifest} needs images of both classes ({len(items)} images)")
    split_hash = manifest_hash(manifest)
    for p, c in zip(paths, ckpts):
        if c.get("split_sha256") and c["split_sha256"] != split_hash:
            log.warning("%s was trained on another split than %s: its validation scores may be optimistic", p, manifest)

    dev = resolve_device(device)
    data = Path(data)
    cols, labels, order = [], None, None
    for p, c in zip(paths, ckpts):
        stored = _stored_valid_scores(c, items, split_hash) if stored_valid_scores else None
        if stored is not None:
            log.info("member %s: using its stored validation scores", p)
            y, s, files = stored
        else:
            y, s, files = member_valid_scores(c, data, items, dev, batch_size, workers)
        if order is None:
            labels, order = y, files
        elif files != order:
            raise ValueError("members skipped different validation images; cannot line their scores up")
        cols.append(s)
        log.info("member %s: valid AUC %.4f", p, compute_metrics(y, s, 0.5)["roc_auc"])
    pv = np.stack(cols, 1)
    weights, intercept = [1.0 / len(paths)] * len(paths), 0.0
    if method == "weighted":
        weights = fit_weights(pv, labels)
    elif method == "stacking":
        weights, intercept = fit_stacker(pv, labels)
    ens = combine(pv, method, weights, intercept)
    thr = float(choose_threshold(labels, ens, threshold))
    out = Path(out)
    members = []
    for p, c in zip(paths, ckpts):
        members.append(
            {
                "path": os.path.relpath(p.resolve(), out.resolve().parent),
                "arch": c["arch"],
                "head": head_of(c),
                "classes": c.get("classes", list(CLASSES)),
                "data_config": c["data_config"],
                "model": c["model"],
                "config": {"model": (c.get("config") or {}).get("model", {"head": head_of(c)})},
                "temperature": float(c.get("temperature", 1.0)),
                "threshold": float(c.get("threshold", 0.5)),
            }
        )
    valid = {
        "ensemble": {k: compute_metrics(labels, ens, thr)[k] for k in ("accuracy", "roc_auc")},
        "members": [{k: compute_metrics(labels, s, 0.5)[k] for k in ("accuracy", "roc_auc")} for s in cols],
    }
    ckpt = {
        "kind": "ensemble",
        "arch": f"ensemble-{method}({'+'.join(c['arch'] for c in ckpts)})",
        "classes": list(CLASSES),
        "data_config": ckpts[0]["data_config"],
        "model": {},
        "members": members,
        "method": method,
        "weights": weights,
        "intercept": intercept,
        "threshold": thr,
        "threshold_rule": f"{threshold} (chosen on the validation split)",
        "fit": {"split": "valid", "n": len(labels), "manifest": str(manifest), "split_sha256": split_hash},
        "valid": valid,
        "valid_scores": {"labels": [int(v) for v in labels], "members": pv.tolist(), "scores": ens.tolist()},
    }
    save_checkpoint(ckpt, out)
    return {"path": str(out), "method": method, "weights": weights, "intercept": intercept, "threshold": thr} | valid
