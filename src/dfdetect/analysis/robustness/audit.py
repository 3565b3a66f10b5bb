"""Leakage audit behind ``dfdetect audit``: near-duplicates across splits and format shortcuts between classes.

Two ways a test score lies:
1. the same picture (or a re-encoded / resized copy) sits in train and test: found with a 64-bit perceptual hash
   (imagehash ``phash``) and Hamming distance <= k, candidates gathered by the pigeonhole trick (two hashes within
   k bits agree exactly on at least one of k + 1 bit bands), so it scales past brute force;
2. the classes differ in how they were saved (JPEG quality, file size, resolution, mode, format), so a model can
   learn the container instead of the face. Each statistic is scored on its own (ROC-AUC of a threshold for
   numbers, balanced accuracy of a per-value majority vote for categories), and a small decision tree on all of
   them is cross-validated; a WARNING names every statistic that separates the classes on its own.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dfdetect.data.neardup import near_duplicate_pairs

log = logging.getLogger(__name__)

NUMERIC = ("file_size", "width", "height", "pixels", "bytes_per_pixel", "jpeg_quality")
CATEGORICAL = ("format", "mode", "resolution", "subsampling")
CLASS_NAMES = {0: "real", 1: "fake"}


@dataclass
class FileFacts:
    path: str
    label: int
    split: str
    file_size: int
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    jpeg_quality: int | None = None
    subsampling: str | None = None
    phash: str | None = None
    error: str | None = None


def file_facts(path: Path, rel: str, label: int, split: str) -> FileFacts:
    """Container facts and the perceptual hash of one file (error set when it cannot be decoded)."""
    import imagehash
    from PIL import Image

    from dfdetect.analysis.forensics.jpeg import estimate_quality

    size = path.stat().st_size if path.is_file() else 0
    facts = FileFacts(rel, label, split, size)
    try:
        with Image.open(path) as img:
            facts.format, facts.mode = img.format, img.mode
            facts.width, facts.height = img.size
            if img.format == "JPEG":
                tables = dict(getattr(img, "quantization", None) or {})
                if tables:
                    facts.jpeg_quality = estimate_quality(tables)[0]
                try:
                    from PIL import JpegImagePlugin

                    sub = JpegImagePlugin.get_sampling(img)
                    facts.subsampling = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(sub, "other")
                except (AttributeError, ValueError):
                    pass
            img.load()
            facts.phash = str(imagehash.phash(img.convert("RGB")))
    except Exception as e:  # noqa: BLE001 - any decoder failure is one audit finding, not a crash
        facts.error = f"{type(e).__name__}: {e}"
    return facts


def _auc(y: np.ndarray, x: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ok = ~np.isnan(x)
    y, x = y[ok], x[ok]
    if len(np.unique(y)) < 2 or len(np.unique(x)) < 2:
        return 0.5
    a = float(roc_auc_score(y, x))
    return max(a, 1 - a)


def _majority_balanced_accuracy(y: np.ndarray, values: Sequence[Any], min_count: int = 3) -> float:
    """Balanced accuracy of predicting each value's majority class (how well a category alone tells classes)."""
    seen = Counter(values)
    values = [v if seen[v] >= min_count else "<rare>" for v in values]  # unique values would fit by heart
    by_value: dict[Any, Counter] = {}
    for v, t in zip(values, y):
        by_value.setdefault(v, Counter())[int(t)] += 1
    # weight each class equally: a value predicts the class with the larger share of that class's images
    totals = Counter(int(t) for t in y)
    if len(totals) < 2:
        return 0.5
    correct = dict.fromkeys(totals, 0.0)
    for counts in by_value.values():
        best = max(totals, key=lambda c: counts[c] / totals[c])
        correct[best] += counts[best]
    return float(np.mean([correct[c] / totals[c] for c in totals]))


def separability(facts: Sequence[FileFacts], seed: int = 0) -> dict[str, Any]:
    """How well each container statistic (and all together) tells real from fake, without looking at pixels."""
    y = np.array([f.label for f in facts])
    per_feature: dict[str, dict[str, Any]] = {}
    cols: dict[str, np.ndarray] = {}
    for name in NUMERIC:
        x = np.array([_numeric(f, name) for f in facts], dtype=float)
        if np.all(np.isnan(x)):
            continue
        cols[name] = np.nan_to_num(x, nan=-1.0)
        per_feature[name] = {"kind": "numeric", "auc": _auc(y, x)}
        per_feature[name]["score"] = per_feature[name]["auc"]
    for name in CATEGORICAL:
        vals = [str(_categorical(f, name)) for f in facts]
        bacc = _majority_balanced_accuracy(y, vals)
        per_feature[name] = {"kind": "categorical", "balanced_accuracy": bacc, "score": bacc}
        for v in sorted(set(vals)):
            cols[f"{name}={v}"] = np.array([float(x == v) for x in vals])
    combined: dict[str, Any] = {}
    if len(np.unique(y)) == 2 and min(Counter(y.tolist()).values()) >= 3 and cols:
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
        from sklearn.tree import DecisionTreeClassifier

        X = np.stack(list(cols.values()), axis=1)
        folds = min(5, min(Counter(y.tolist()).values()))
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        proba = cross_val_predict(
            DecisionTreeClassifier(max_depth=3, random_state=seed), X, y, cv=cv, method="predict_proba"
        )[:, 1]
        pred = proba >= 0.5
        combined = {
            "model": f"decision tree (depth 3) on all statistics, {folds}-fold cross-validated",
            "auc": _auc(y, proba),
            "balanced_accuracy": float(np.mean([(pred[y == c] == bool(c)).mean() for c in (0, 1)])),
        }
    return {"features": per_feature, "combined": combined}


def _numeric(f: FileFacts, name: str) -> float:
    if name == "pixels":
        return float(f.width * f.height) if f.width and f.height else math.nan
    if name == "bytes_per_pixel":
        return f.file_size / (f.width * f.height) if f.width and f.height else math.nan
    v = getattr(f, name)
    return math.nan if v is None else float(v)


def _categorical(f: FileFacts, name: str) -> Any:
    if name == "resolution":
        return f"{f.width}x{f.height}" if f.width else None
    return getattr(f, name)


def class_stats(facts: Sequence[FileFacts]) -> dict[str, Any]:
    """Per class: counts of format/mode/resolution/subsampling, and summaries of size, quality, bytes per pixel."""
    out: dict[str, Any] = {}
    for label, name in CLASS_NAMES.items():
        fs = [f for f in facts if f.label == label]
        if not fs:
            continue
        s: dict[str, Any] = {"n": len(fs)}
        for cat in CATEGORICAL:
            s[cat] = dict(Counter(str(_categorical(f, cat)) for f in fs).most_common(10))
        for num in ("file_size", "bytes_per_pixel", "jpeg_quality", "width", "height"):
            x = np.array([_numeric(f, num) for f in fs], dtype=float)
            x = x[~np.isnan(x)]
            s[num] = (
                {
                    "n": int(len(x)),
                    "mean": float(x.mean()),
                    "median": float(np.median(x)),
                    "min": float(x.min()),
                    "max": float(x.max()),
                    "std": float(x.std()),
                }
                if len(x)
                else {"n": 0}
            )
        out[name] = s
    return out


def run_audit(
    data: str | Path,
    out_dir: str | Path,
    manifest: str | Path | None = None,
    max_distance: int = 4,
    warn_at: float = 0.9,
    workers: int = 4,
    limit_per_class: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Audit a data folder (splits from ``manifest``, else the folder's own splits, else none); write audit.json/md."""
    from tqdm.auto import tqdm

    from dfdetect.data.datasets import limit_per_class as _limit
    from dfdetect.data.datasets import read_manifest, scan

    root = Path(data)
    if manifest:
        items, source = read_manifest(manifest), f"splits from {manifest}"
    else:
        items, has_splits = scan(root)
        source = "the folder's own splits" if has_splits else "no splits (duplicates searched within the folder)"
    items = _limit(items, limit_per_class)

    def one(it: Any) -> FileFacts:
        p = Path(it.path)
        return file_facts(p if p.is_absolute() else root / p, it.path, it.label, it.split)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        facts = list(tqdm(pool.map(one, items), total=len(items), desc="audit", unit="img", disable=not progress))
    good = [f for f in facts if f.error is None]
    errors = [{"path": f.path, "error": f.error} for f in facts if f.error]
    pairs = near_duplicate_pairs([f.phash for f in good], max_distance)
    dups = []
    for i, j, d in pairs:
        a, b = good[i], good[j]
        kind = "within split" if a.split == b.split else "across splits"
        dups.append(
            {
                "a": a.path,
                "b": b.path,
                "distance": d,
                "splits": sorted([a.split or "-", b.split or "-"]),
                "kind": kind,
                "labels": [CLASS_NAMES[a.label], CLASS_NAMES[b.label]],
                "label_conflict": a.label != b.label,
            }
        )
    cross = [d for d in dups if d["kind"] == "across splits"]
    by_pair = Counter("/".join(d["splits"]) for d in cross)
    sep = separability(good)
    warnings = []
    if cross:
        warnings.append(
            f"{len(cross)} near-duplicate pair(s) across splits ({', '.join(f'{k}: {v}' for k, v in by_pair.items())})"
            f": scores on the held-out copy measure memory, not detection"
        )
    conflicts = [d for d in dups if d["label_conflict"]]
    if conflicts:
        warnings.append(f"{len(conflicts)} near-duplicate pair(s) carry different labels (real vs fake)")
    for name, r in sep["features"].items():
        if r["score"] >= warn_at:
            how = f"AUC {r['auc']:.3f}" if r["kind"] == "numeric" else f"balanced accuracy {r['balanced_accuracy']:.3f}"
            warnings.append(f"the classes can be told apart by {name} alone ({how}): a format shortcut")
    comb = sep.get("combined") or {}
    if comb and comb["auc"] >= warn_at and not any("alone" in w for w in warnings):
        warnings.append(
            f"the classes can be told apart by container statistics together ({comb['model']}: AUC {comb['auc']:.3f})"
        )
    report = {
        "data": str(root),
        "splits": source,
        "n_files": len(facts),
        "n_decoded": len(good),
        "max_distance": max_distance,
        "warn_at": warn_at,
        "warnings": warnings,
        "near_duplicates": {
            "n_pairs": len(dups),
            "n_across_splits": len(cross),
            "across_splits_by_pair": dict(by_pair),
            "n_label_conflicts": len(conflicts),
            "pairs": dups,
        },
        "class_stats": class_stats(good),
        "separability": sep,
        "unreadable": errors,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "audit.json").write_text(json.dumps(report, indent=2))
    (out / "audit.md").write_text(format_audit(report))
    (out / "audit_files.json").write_text(json.dumps([asdict(f) for f in facts]))
    for w in warnings:
        log.warning("WARNING: %s", w)
    report["out_dir"] = str(out)
    return report


def format_audit(r: dict[str, Any]) -> str:
    """audit.md: warnings first, then duplicates, per-class statistics and separability."""
    lines = [
        "# Data audit",
        "",
        f"- data: `{r['data']}` ({r['splits']}); {r['n_decoded']} of {r['n_files']} files decoded",
        f"- near-duplicates: perceptual hash (phash, 64 bit), Hamming distance <= {r['max_distance']}",
        "",
        "## Warnings",
        "",
    ]
    lines += [f"- **WARNING**: {w}" for w in r["warnings"]] or ["- none"]
    nd = r["near_duplicates"]
    lines += [
        "",
        "## Near-duplicates",
        "",
        f"{nd['n_pairs']} pair(s), {nd['n_across_splits']} across splits, {nd['n_label_conflicts']} with different "
        "labels.",
        "",
    ]
    if nd["pairs"]:
        lines += ["| a | b | distance | splits | labels |", "|---|---|---:|---|---|"]
        for d in nd["pairs"][:50]:
            lines.append(
                f"| {d['a']} | {d['b']} | {d['distance']} | {'/'.join(d['splits'])} | {'/'.join(d['labels'])} |"
            )
        if len(nd["pairs"]) > 50:
            lines.append(f"| ... {len(nd['pairs']) - 50} more in audit.json | | | | |")
    lines += ["", "## Per-class statistics", ""]
    cs = r["class_stats"]
    names = list(cs)
    lines += ["| statistic | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for num in ("file_size", "bytes_per_pixel", "jpeg_quality", "width", "height"):
        cells = []
        for c in names:
            s = cs[c][num]
            cells.append(f"median {s['median']:.4g} (range {s['min']:.4g}-{s['max']:.4g})" if s["n"] else "n/a")
        lines.append(f"| {num} | " + " | ".join(cells) + " |")
    for cat in ("format", "mode", "resolution", "subsampling"):
        cells = [", ".join(f"{k}: {v}" for k, v in cs[c][cat].items()) for c in names]
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Can the container tell the classes apart?",
        "",
        "| statistic | score | meaning |",
        "|---|---:|---|",
    ]
    for name, f in r["separability"]["features"].items():
        meaning = "ROC-AUC of a threshold" if f["kind"] == "numeric" else "balanced accuracy of value -> class"
        flag = " **(WARNING)**" if f["score"] >= r["warn_at"] else ""
        lines.append(f"| {name} | {f['score']:.3f}{flag} | {meaning} |")
    comb = r["separability"].get("combined")
    if comb:
        lines.append(
            f"| all together | {comb['auc']:.3f} | {comb['model']}: AUC (balanced accuracy "
            f"{comb['balanced_accuracy']:.3f}) |"
        )
    lines += ["", "0.5 = no information; 1.0 = the statistic alone separates real from fake.", ""]
    if r["unreadable"]:
        lines += ["## Unreadable files", ""] + [f"- {e['path']}: {e['error']}" for e in r["unreadable"]] + [""]
    return "\n".join(lines)
