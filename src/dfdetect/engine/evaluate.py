"""Scoring a dataset and writing the evaluation artifacts (metrics.json, report, figures, predictions)."""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dfdetect.core import metrics as M
from dfdetect.core.device import autocast, to_memory_format

log = logging.getLogger(__name__)


@torch.inference_mode()
def score_loader(
    model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = True, desc: str = "eval"
) -> dict[str, Any]:
    """Run the model over a loader. Returns labels, P(fake), mean CE loss, dataset indices and bad indices.

    Channels-last everywhere (faster convolutions, same fp32 values); bf16 autocast only on CUDA with ``amp``:
    CPU scores stay fp32, whatever the CPU, so they match the exported model's.
    """
    model.eval()
    labels, scores, index, bad = [], [], [], []
    loss_sum, n = 0.0, 0
    amp = amp and device.type == "cuda"
    for images, y, idx, bad_idx in tqdm(loader, desc=desc, leave=False, disable=None):
        bad.extend(bad_idx)
        if images is None:
            continue
        images = to_memory_format(images.to(device, non_blocking=True), True)
        y = y.to(device)
        with autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        n += len(y)
        scores.append(torch.softmax(logits, 1)[:, 1].cpu())
        labels.append(y.cpu())
        index.append(idx)
    cat = (lambda xs: torch.cat(xs).numpy()) if n else (lambda xs: np.zeros(0))
    return {
        "labels": cat(labels).astype(int),
        "scores": cat(scores).astype(float),
        "index": cat(index).astype(int),
        "bad": sorted(bad),
        "loss": loss_sum / max(n, 1),
    }


def write_eval_artifacts(
    y_true: np.ndarray,
    y_score: np.ndarray,
    paths: Sequence[str],
    threshold: float,
    out_dir: str | Path,
    extra: dict[str, Any] | None = None,
    n_boot: int = 1000,
    sources: Sequence[str] | None = None,
    parts: dict[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """metrics.json (+ 95% CIs), classification_report.txt, predictions.csv and the paper's figures.

    With ``sources`` (each image's data folder, from a multi-folder manifest) naming two or more folders, the
    same metrics and CIs are also reported per folder (``by_source``), since the folders differ in processing
    and in the kind of fake. ``parts`` adds named unions of folders (``{"faces140k": ["faces140k-subset",
    "faces140k-more"]}``) to the same table.
    """
    from dfdetect.core import plots
    from dfdetect.engine.calibration import ece, reliability_diagram

    y_true, y_score = np.asarray(y_true, dtype=int), np.asarray(y_score, dtype=float)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = M.compute_metrics(y_true, y_score, threshold)
    m["ci95"] = M.bootstrap_ci(y_true, y_score, threshold, n_boot=n_boot) if len(y_true) > 1 else {}
    m["ece"] = ece(y_true, y_score)  # expected calibration error of P(fake), 15 equal-width bins
    by = sorted(set(sources)) if sources is not None and len(set(sources)) > 1 else []
    if by:
        src = np.asarray(sources)
        m["by_source"] = {}
        groups = {name: [name] for name in by} | {k: list(v) for k, v in (parts or {}).items()}
        for name, members in groups.items():
            sel = np.isin(src, members)
            if not sel.any():
                raise ValueError(f"part {name!r}: none of {members} is a data folder here ({by})")
            sm = M.compute_metrics(y_true[sel], y_score[sel], threshold)
            sm["ci95"] = M.bootstrap_ci(y_true[sel], y_score[sel], threshold, n_boot=n_boot) if sel.sum() > 1 else {}
            m["by_source"][name] = {k: v for k, v in sm.items() if k != "classification_report"}
    m.update(extra or {})
    (out / "metrics.json").write_text(json.dumps(m, indent=2, default=_json_default))
    (out / "classification_report.txt").write_text(format_report(m))
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "score", "pred", "correct"] + (["source"] if by else []))
        for i, (p, t, s) in enumerate(zip(paths, y_true, y_score)):
            pred = int(s >= threshold)
            w.writerow([p, int(t), f"{s:.6f}", pred, int(pred == t)] + ([sources[i]] if by else []))
    plots.confusion_matrix(m["confusion_matrix"], out / "confusion_matrix.png")
    plots.misclassifications(m["misclassified"], out / "misclassified.png")
    if not math.isnan(m["roc_auc"]):
        plots.roc(y_true, y_score, m["roc_auc"], out / "roc.png", eer=m["eer"])
    if len(y_true):
        reliability_diagram(y_true, y_score, out / "reliability.png")
    return m


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def format_report(m: dict[str, Any]) -> str:
    """The paper's Figure 10 (classification report) as text, plus the ranking metrics with CIs."""
    rep = m["classification_report"]
    lines = [f"{'':>14}{'precision':>11}{'recall':>9}{'f1-score':>10}{'support':>9}"]
    for k in ("real", "fake"):
        r = rep[k]
        lines.append(f"{k:>14}{r['precision']:>11.4f}{r['recall']:>9.4f}{r['f1-score']:>10.4f}{int(r['support']):>9}")
    lines.append("")
    lines.append(f"{'accuracy':>14}{'':>11}{'':>9}{rep['accuracy']:>10.4f}{m['n']:>9}")
    for k in ("macro avg", "weighted avg"):
        r = rep[k]
        lines.append(f"{k:>14}{r['precision']:>11.4f}{r['recall']:>9.4f}{r['f1-score']:>10.4f}{int(r['support']):>9}")
    lines.append("")
    ci = m.get("ci95", {})
    for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "eer"):
        c = ci.get(k)
        cis = f"  [95% CI {c[0]:.4f}-{c[1]:.4f}]" if c else ""
        lines.append(f"{k:>18}: {m[k]:.4f}{cis}")
    lines.append(f"{'threshold':>18}: {m['threshold']:.4f}")
    lines.append(f"{'tpr_at_fpr_1pct':>18}: {m['tpr_at_fpr_1pct']:.4f}{_ci(ci, 'tpr_at_fpr_1pct')}")
    mis = m["misclassified"]
    lines.append(f"{'misclassified':>18}: {mis['real_as_fake']} real as fake, {mis['fake_as_real']} fake as real")
    if m.get("by_source"):
        lines += ["", "per data folder (95% CIs):", format_by_source(m["by_source"])]
    return "\n".join(lines) + "\n"


def _ci(ci: dict[str, Any], key: str) -> str:
    c = ci.get(key)
    return f"  [95% CI {c[0]:.4f}-{c[1]:.4f}]" if c and not any(math.isnan(v) for v in c) else ""


def format_by_source(by_source: dict[str, dict[str, Any]]) -> str:
    """One row per data folder: n, accuracy, ROC-AUC and TPR at 1% FPR with their CIs, EER."""

    def cell(m: dict[str, Any], k: str) -> str:
        c = m.get("ci95", {}).get(k)
        ci = f" ({c[0]:.3f}-{c[1]:.3f})" if c and not any(math.isnan(v) for v in c) else ""
        return f"{m[k]:.4f}{ci}"

    head = f"{'folder':<22}{'n':>6}  {'accuracy':<22}{'ROC-AUC':<22}{'TPR@1%FPR':<22}{'EER':>7}"
    rows = [head]
    for name, m in by_source.items():
        rows.append(
            f"{name:<22}{m['n']:>6}  {cell(m, 'accuracy'):<22}{cell(m, 'roc_auc'):<22}"
            f"{cell(m, 'tpr_at_fpr_1pct'):<22}{m['eer']:>7.4f}"
        )
    return "\n".join(rows)


def _score_with_detector(det: Any, ds: Any, batch_size: int, workers: int) -> dict[str, Any]:
    """score_loader's result for a saved model behind a Detector: P(fake) per readable item, in order
    (decoding and preprocessing on ``workers`` threads, one batched forward pass per ``batch_size`` images)."""
    from concurrent.futures import ThreadPoolExecutor

    def load(i: int) -> np.ndarray | None:
        img = ds._decode(i)
        return None if img is None else det.preprocess(img)

    labels, scores, index, bad = [], [], [], []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in tqdm(range(0, len(ds), batch_size), desc="evaluate", leave=False, disable=None):
            idx = list(range(start, min(start + batch_size, len(ds))))
            arrays = list(pool.map(load, idx))
            good = [i for i, a in zip(idx, arrays) if a is not None]
            bad += [i for i, a in zip(idx, arrays) if a is None]
            if good:
                scores.append(det.score_batch(np.stack([a for a in arrays if a is not None])))
                labels += [ds.items[i].label for i in good]
                index += good
    p = np.concatenate(scores) if scores else np.zeros(0)
    y = np.asarray(labels, dtype=int)
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    loss = float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))) if len(y) else 0.0
    return {"labels": y, "scores": p.astype(float), "index": np.asarray(index, dtype=int), "bad": bad, "loss": loss}


def default_eval_dir(checkpoint: Path, data: Path, scored: str) -> Path:
    """Where evaluate writes without --out: beside a run's checkpoint, named by the data and the split scored
    ("all" when every image was); for a shipped model (a name, or its file inside the package) the current
    folder, as calibrate does: an installed package folder is no place for a user's results, nor writable."""
    from dfdetect.runtime.detector import WEIGHTS_DIR, model_file

    if model_file(checkpoint).resolve().parent == WEIGHTS_DIR.resolve():
        return Path.cwd() / f"eval_{checkpoint.stem}_{data.name}_{scored}"
    return checkpoint.parent / f"eval_{data.name}_{scored}"


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | Path,
    out_dir: str | Path | None = None,
    split: str = "test",
    manifest: str | Path | None = None,
    threshold: float | None = None,
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 2,
    n_boot: int = 1000,
    parts: dict[str, Sequence[str]] | None = None,
    backend: str = "auto",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Evaluate a checkpoint, shipped .safetensors or exported .onnx on a data folder (per source folder too,
    for multi-folder manifests). ``.onnx`` files run on ``backend`` (auto: OpenVINO, else ONNX Runtime) in
    ``precision`` (fp32 unless asked), exactly as ``predict`` runs them.

    Which images: :func:`dfdetect.data.datasets.select_items` (a given manifest's split; else the model's own
    manifest's split when made from this folder, so a model is never scored on its own training images; else
    the data's own split; else every image, warning about images that share names with its training images).
    """
    from dfdetect.data.datasets import ImageDataset, select_items
    from dfdetect.runtime.detector import Detector, model_file

    checkpoint, data = Path(checkpoint), Path(data)
    items, source = select_items(data, split, manifest, model_file(checkpoint))
    if not items:
        raise ValueError(f"no images to evaluate in {data} ({source})")
    log.info("evaluating %s on %d images of %s (%s)", checkpoint, len(items), data, source)
    # One scoring path for every model kind (checkpoint, .safetensors, .onnx, ensemble): the Detector, with the
    # model's own stored preprocessing, temperature and threshold, exactly as predict runs it.
    det = Detector.load(checkpoint, device=device, backend=backend, precision=precision)
    ds = ImageDataset(items, data, None)
    res = _score_with_detector(det, ds, batch_size, workers)
    ckpt = {"arch": det.arch, "threshold": det.threshold}
    thr = float(ckpt.get("threshold", 0.5) if threshold is None else threshold)
    scored = "all" if source.startswith("all images") else split
    out = Path(out_dir) if out_dir else default_eval_dir(checkpoint, data, scored)
    skipped = [str(ds.path(i)) for i in res["bad"]]
    for p in skipped:
        log.warning("skipped unreadable file %s", p)
    m = write_eval_artifacts(
        res["labels"],
        res["scores"],
        [ds.items[i].path for i in res["index"]],
        thr,
        out,
        extra={
            "checkpoint": str(checkpoint),
            "arch": ckpt["arch"],
            "data": str(data),
            "images": source,
            "skipped_files": skipped,
            "numeric_precision": precision,
        },
        n_boot=n_boot,
        sources=[ds.items[i].source for i in res["index"]],
        parts=parts,
    )
    m["out_dir"] = str(out)
    return m
