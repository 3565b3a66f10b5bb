"""The perturbation sweep behind ``dfdetect robustness``: one model, one image set, many conditions.

Each image is decoded once; every condition perturbs the decoded PIL image, then the model's own stored
preprocessing runs, then the model scores it. Per condition we report accuracy at the model's stored threshold,
ROC-AUC, EER, TPR at FPR 1% and 0.5%, and the false-positive rate on real images at that threshold (the
"real photo flagged as fake" rate), and write robustness.csv, robustness.md and one plot per family.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dfdetect.analysis.robustness.perturb import FAMILIES, Condition, default_conditions, image_seed

log = logging.getLogger(__name__)

COLUMNS = (
    "condition",
    "family",
    "strength",
    "n",
    "n_real",
    "n_fake",
    "accuracy",
    "roc_auc",
    "eer",
    "tpr_at_fpr_1pct",
    "tpr_at_fpr_0.5pct",
    "fpr_real",
    "fnr_fake",
    "mean_score_real",
    "mean_score_fake",
    "threshold",
)
PLOT_METRICS = (
    ("roc_auc", "ROC-AUC"),
    ("accuracy", "accuracy"),
    ("tpr_at_fpr_1pct", "TPR @ FPR 1%"),
    ("fpr_real", "FPR on reals"),
)


def select_items(
    model: str | Path, data: str | Path, split: str = "test", manifest: str | Path | None = None
) -> tuple[list[Any], str]:
    """Which images to sweep, by the same rule as ``evaluate`` (:func:`dfdetect.data.datasets.select_items`)."""
    from dfdetect.data.datasets import select_items as _select
    from dfdetect.runtime.detector import model_file

    return _select(data, split, manifest, model_file(model))


def condition_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    """The table's metrics for one condition (NaN where a class is missing)."""
    from sklearn.metrics import roc_auc_score

    from dfdetect.core.metrics import eer, tpr_at_fpr

    y = np.asarray(y, dtype=int)
    s = np.asarray(s, dtype=float)
    pred = s >= threshold
    both = len(np.unique(y)) == 2
    real, fake = y == 0, y == 1
    nan = float("nan")
    return {
        "n": int(len(y)),
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
        "accuracy": float((pred == fake).mean()) if len(y) else nan,
        "roc_auc": float(roc_auc_score(y, s)) if both else nan,
        "eer": eer(y, s)[0] if both else nan,
        "tpr_at_fpr_1pct": tpr_at_fpr(y, s, 0.01) if both else nan,
        "tpr_at_fpr_0.5pct": tpr_at_fpr(y, s, 0.005) if both else nan,
        "fpr_real": float(pred[real].mean()) if real.any() else nan,
        "fnr_fake": float((~pred[fake]).mean()) if fake.any() else nan,
        "mean_score_real": float(s[real].mean()) if real.any() else nan,
        "mean_score_fake": float(s[fake].mean()) if fake.any() else nan,
        "threshold": float(threshold),
    }


def run_sweep(
    model: str | Path,
    data: str | Path,
    out_dir: str | Path,
    split: str = "test",
    manifest: str | Path | None = None,
    conditions: Sequence[Condition] | None = None,
    limit_per_class: int | None = None,
    threshold: float | None = None,
    device: str = "cpu",
    backend: str = "auto",
    batch_size: int = 32,
    workers: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``model`` on the chosen images under every condition; write the CSV, markdown table and plots."""
    from tqdm.auto import tqdm

    from dfdetect.data.datasets import limit_per_class as _limit
    from dfdetect.data.io import ImageLoadError, open_image
    from dfdetect.runtime.detector import Detector

    conditions = list(conditions or default_conditions())
    items, source = select_items(model, data, split, manifest)
    items = _limit(items, limit_per_class)
    if not items:
        raise ValueError(f"no images to sweep in {data} ({source})")
    det = Detector.load(model, device=device, backend=backend)
    thr = det.threshold if threshold is None else float(threshold)
    root = Path(data)
    log.info(
        "robustness sweep: %s on %d images of %s (%s), %d conditions, threshold %.4f",
        model,
        len(items),
        data,
        source,
        len(conditions),
        thr,
    )

    def path_of(it: Any) -> Path:
        p = Path(it.path)
        return p if p.is_absolute() else root / p

    def decode(it: Any) -> Any:
        try:
            return open_image(path_of(it))
        except ImageLoadError as e:
            log.warning("skipping %s", e)
            return None

    def prep(args: tuple[Condition, Any, int]) -> np.ndarray:
        cond, img, s = args
        return det.preprocess(cond.apply(img, seed=s))

    labels: list[int] = []
    used: list[str] = []
    skipped: list[str] = []
    scores: dict[str, list[float]] = {c.name: [] for c in conditions}
    pool = ThreadPoolExecutor(max(1, workers)) if workers > 0 else None
    mapper = pool.map if pool else map
    try:
        with tqdm(total=len(items) * len(conditions), desc="robustness", unit="img", disable=not progress) as bar:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                imgs = list(mapper(decode, chunk))
                good = [(it, im) for it, im in zip(chunk, imgs) if im is not None]
                skipped += [str(path_of(it)) for it, im in zip(chunk, imgs) if im is None]
                if good:
                    labels += [it.label for it, _ in good]
                    used += [it.path for it, _ in good]
                    seeds = [image_seed(it.path, seed) for it, _ in good]
                    for cond in conditions:
                        batch = np.stack(list(mapper(prep, [(cond, im, s) for (_, im), s in zip(good, seeds)])))
                        scores[cond.name] += det.score_batch(batch).tolist()
                        bar.update(len(chunk))
                else:
                    bar.update(len(chunk) * len(conditions))
    finally:
        if pool:
            pool.shutdown()
    if not labels:
        raise ValueError(f"none of the {len(items)} images in {data} could be decoded")
    y = np.asarray(labels)
    rows = []
    for cond in conditions:
        row = {"condition": cond.name, "family": cond.family, "strength": cond.strength}
        row.update(condition_metrics(y, np.asarray(scores[cond.name]), thr))
        rows.append(row)
    meta = {
        "model": str(model),
        "model_id": det.model_id,
        "data": str(data),
        "images": source,
        "threshold": thr,
        "temperature": det.temperature,
        "n_images": len(labels),
        "skipped_files": skipped,
        "seed": seed,
        "split": split,
        "limit_per_class": limit_per_class,
        "threshold_override": threshold,
    }
    out = write_sweep(rows, out_dir, meta)
    np.savez_compressed(
        Path(out_dir) / "robustness_scores.npz",
        labels=y,
        paths=np.asarray(used),
        **{c.name: np.asarray(scores[c.name]) for c in conditions},
    )
    return {"rows": rows, "meta": meta, "files": out}


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The markdown table: one row per condition, with AUC and accuracy changes against ``none``."""
    base = next((r for r in rows if r["condition"] == "none"), None)
    head = (
        "| condition | n | accuracy | ROC-AUC | ΔAUC | EER | TPR@FPR1% | TPR@FPR0.5% | FPR real | FNR fake |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = []
    for r in rows:
        d_auc = r["roc_auc"] - base["roc_auc"] if base else float("nan")
        lines.append(
            f"| {r['condition']} | {r['n']} | {_fmt(r['accuracy'])} | {_fmt(r['roc_auc'])} | "
            f"{'' if r['condition'] == 'none' else _fmt(d_auc, 4)} | {_fmt(r['eer'])} | "
            f"{_fmt(r['tpr_at_fpr_1pct'])} | {_fmt(r['tpr_at_fpr_0.5pct'])} | {_fmt(r['fpr_real'])} | "
            f"{_fmt(r['fnr_fake'])} |"
        )
    return head + "\n".join(lines) + "\n"


def write_sweep(rows: Sequence[dict[str, Any]], out_dir: str | Path, meta: dict[str, Any]) -> dict[str, str]:
    """robustness.csv, robustness.md, robustness.json and robustness_<family>.png in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "robustness.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    md = [
        "# Robustness sweep",
        "",
        f"- model: `{meta['model']}` ({meta['model_id']}), threshold {meta['threshold']:.4f}, "
        f"temperature {meta['temperature']:.4f}",
        f"- data: `{meta['data']}` ({meta['images']}), {meta['n_images']} images scored, "
        f"{len(meta['skipped_files'])} unreadable",
        "- every perturbation is applied to the decoded image before the model's own preprocessing; "
        "accuracy, FPR real and FNR fake use the threshold above; AUC/EER/TPR@FPR do not depend on it.",
        "",
        format_table(rows),
    ]
    (out / "robustness.md").write_text("\n".join(md))
    (out / "robustness.json").write_text(json.dumps({"meta": meta, "rows": list(rows)}, indent=2))
    files = {"csv": str(out / "robustness.csv"), "md": str(out / "robustness.md")}
    for fam in dict.fromkeys(r["family"] for r in rows):
        if fam != "none":
            files[f"plot_{fam}"] = str(plot_family(rows, fam, out / f"robustness_{fam}.png"))
    return files


def plot_family(rows: Sequence[dict[str, Any]], family: str, path: str | Path) -> Path:
    """Metric vs strength for one family, with the unperturbed baseline as its first point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = FAMILIES.get(family, {"xlabel": "strength", "baseline": 0.0, "reverse": False})
    base = [r for r in rows if r["condition"] == "none"]
    fam = sorted((r for r in rows if r["family"] == family), key=lambda r: r["strength"])
    pts = [{**b, "strength": float(spec["baseline"])} for b in base] + fam
    pts.sort(key=lambda r: r["strength"], reverse=bool(spec["reverse"]))
    categorical = family == "format"
    xs = list(range(len(pts))) if categorical else [r["strength"] for r in pts]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in PLOT_METRICS:
        ax.plot(xs, [r[key] for r in pts], marker="o", label=label)
    if categorical:
        ax.set_xticks(xs, [r["condition"].replace("format_", "") for r in pts])
    elif spec["reverse"]:
        ax.invert_xaxis()
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(str(spec["xlabel"]))
    ax.set_ylabel("metric")
    ax.set_title(f"Robustness: {family}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def model_labels(models: Sequence[str | Path]) -> list[str]:
    """Short unique names for models: a run's folder name for ``best.pt``/``last.pt``, else the file stem."""
    labels: list[str] = []
    for m in models:
        p = Path(m)
        base = p.parent.name if p.stem in ("best", "last") and p.parent.name else p.stem
        name, k = base, 2
        while name in labels:
            name, k = f"{base}_{k}", k + 1
        labels.append(name)
    return labels


def format_compare_table(results: dict[str, Sequence[dict[str, Any]]]) -> str:
    """One row per condition, ROC-AUC / accuracy / FPR on reals / FNR on fakes side by side for each model."""
    names = list(results)
    by_model = {n: {r["condition"]: r for r in rows} for n, rows in results.items()}
    conds = list(dict.fromkeys(r["condition"] for rows in results.values() for r in rows))
    cols = [(n, m) for m in ("roc_auc", "accuracy", "fpr_real", "fnr_fake") for n in names]
    short = {"roc_auc": "AUC", "accuracy": "acc", "fpr_real": "FPR real", "fnr_fake": "FNR fake"}
    head = "| condition | " + " | ".join(f"{short[m]} {n}" for n, m in cols) + " |\n"
    head += "|---|" + "---:|" * len(cols) + "\n"
    lines = []
    for c in conds:
        cells = []
        for n, m in cols:
            r = by_model[n].get(c)
            cells.append(_fmt(r[m]) if r else "")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def write_compare(results: dict[str, Sequence[dict[str, Any]]], out_dir: str | Path, metas: dict[str, Any]) -> dict:
    """compare.md, compare.csv and compare_<metric>.png (one panel per family, one line per model)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "compare.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", *COLUMNS], extrasaction="ignore")
        w.writeheader()
        for name, rows in results.items():
            for r in rows:
                w.writerow({"model": name, **{k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()}})
    md = ["# Robustness sweep: models side by side", ""]
    for name, meta in metas.items():
        md.append(
            f"- `{name}`: `{meta['model']}` ({meta['model_id']}), threshold {meta['threshold']:.4f}, "
            f"{meta['n_images']} images of `{meta['data']}` ({meta['images']})"
        )
    md += ["", format_compare_table(results)]
    (out / "compare.md").write_text("\n".join(md))
    files = {"csv": str(out / "compare.csv"), "md": str(out / "compare.md")}
    for key, label in (("roc_auc", "ROC-AUC"), ("accuracy", "accuracy")):
        files[f"plot_{key}"] = str(plot_compare(results, key, label, out / f"compare_{key}.png"))
    return files


def plot_compare(results: dict[str, Sequence[dict[str, Any]]], key: str, label: str, path: str | Path) -> Path:
    """One panel per perturbation family: ``key`` vs strength, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = [f for f in dict.fromkeys(r["family"] for rows in results.values() for r in rows) if f != "none"]
    ncol = min(3, max(1, len(fams)))
    nrow = max(1, math.ceil(len(fams) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.3 * nrow), squeeze=False)
    for ax, fam in zip(axes.flat, fams):
        spec = FAMILIES.get(fam, {"xlabel": "strength", "baseline": 0.0, "reverse": False})
        categorical = fam == "format"
        for name, rows in results.items():
            base = [{**r, "strength": float(spec["baseline"])} for r in rows if r["condition"] == "none"]
            pts = sorted(base + [r for r in rows if r["family"] == fam], key=lambda r: r["strength"])
            if spec["reverse"]:
                pts.reverse()
            xs = list(range(len(pts))) if categorical else [r["strength"] for r in pts]
            ax.plot(xs, [r[key] for r in pts], marker="o", label=name)
            if categorical:
                ax.set_xticks(xs, [r["condition"].replace("format_", "") for r in pts])
        if spec["reverse"] and not categorical:
            ax.invert_xaxis()
        ax.set_title(fam)
        ax.set_xlabel(str(spec["xlabel"]))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(fams) :]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
