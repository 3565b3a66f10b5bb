"""Score candidate detectors (and their soft-voting ensembles) on the valid and test splits of a manifest.

Selection uses the validation columns only; test columns are printed for the record.
    python experiments/recipe_search/score_candidates.py --data DIR --manifest split.csv A.safetensors B.safetensors ...
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
from pathlib import Path

import numpy as np

from dfdetect.core.metrics import compute_metrics
from dfdetect.engine.evaluate import evaluate_checkpoint


def scores(out: Path) -> dict[str, tuple[int, float]]:
    with open(out / "predictions.csv") as f:
        return {r["path"]: (int(r["label"]), float(r["score"])) for r in csv.DictReader(f)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("runs/candidates"))
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    per: dict[str, dict[str, dict[str, tuple[int, float]]]] = {}
    for m in a.models:
        per[m.stem] = {}
        for split in ("valid", "test"):
            out = a.out / m.stem / split
            if not (out / "predictions.csv").exists():
                evaluate_checkpoint(m, a.data, out, split, a.manifest, workers=a.workers, n_boot=200)
            per[m.stem][split] = scores(out)
    rows = []
    names = list(per)
    for k in range(1, len(names) + 1):
        for combo in itertools.combinations(names, k):
            row = {"models": "+".join(combo)}
            for split in ("valid", "test"):
                paths = sorted(per[combo[0]][split])
                y = np.array([per[combo[0]][split][p][0] for p in paths])
                s = np.mean([[per[c][split][p][1] for p in paths] for c in combo], axis=0)
                m = compute_metrics(y, s, 0.5)
                row[f"{split}_auc"], row[f"{split}_acc"] = m["roc_auc"], m["accuracy"]
            rows.append(row)
    rows.sort(key=lambda r: -r["valid_auc"])
    print(f"{'models':<70}{'valid AUC':>10}{'valid acc':>10}{'test AUC':>10}{'test acc':>10}")
    for r in rows:
        print(
            f"{r['models']:<70}{r['valid_auc']:>10.4f}{r['valid_acc']:>10.4f}{r['test_auc']:>10.4f}{r['test_acc']:>10.4f}"
        )
    (a.out / "candidates.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
