"""Learning curve: one training recipe on nested, stratified subsets of one training split, scored on one test split.

    python experiments/learning_curve/run.py --manifest src/dfdetect/weights/split.csv --data ../shared/data \
        --out runs/learning_curve

For each size (default 1200, 2500, 5000 and the whole training split) it writes a manifest whose train rows are
a stratified subset (by folder and label; smaller sets are subsets of larger ones) and whose valid/test rows are
the full splits, trains with `dfdetect train`, scores the test split with `dfdetect evaluate` (per folder, the
named parts, 95% bootstrap CIs), and writes results.json, table.md and learning_curve.png (log x, the paper's
99.83% at 100k images drawn for reference). Resumable: finished sizes are skipped, interrupted ones resumed.

The recipe is cheaper than the shipped model's (the point is the trend, at equal recipe for every size):
EfficientNet-Lite0 from ImageNet (offline wheel) at --img-size px, no warm-up, AdamW + cosine, label smoothing
0.1, the paper's augmentation, epochs = max(1, ceil(budget / n)) so every size gets about the same number of
optimiser steps, best epoch by validation AUC, threshold at the validation EER.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from dfdetect.data.datasets import read_manifest, write_manifest
from dfdetect.data.split import subsample

PAPER = (100_000, 0.9983, "paper: EfficientNetV2-B1, 100k images")


def dfdetect(*args: str) -> str:
    cmd = [sys.executable, "-m", "dfdetect", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", type=Path, required=True, help="Split manifest (multi-folder, from dfdetect split).")
    ap.add_argument("--data", type=Path, required=True, help="The manifest's root (the folders' parent).")
    ap.add_argument("--out", type=Path, default=Path("runs/learning_curve"))
    ap.add_argument(
        "--sizes", default="1200,2500,5000,all", help="Training-set sizes, comma-separated; all = every row."
    )
    ap.add_argument("--img-size", type=int, default=128, help="Input size of the curve's recipe (cheap on a CPU).")
    ap.add_argument(
        "--budget",
        type=int,
        default=8000,
        help="Training images seen per size (sets the epochs: max(1, ceil(budget / n))).",
    )
    ap.add_argument(
        "--part",
        action="append",
        default=["faces140k=faces140k-subset+faces140k-more"],
        help="Named union of folders to report too (NAME=A+B), as in dfdetect evaluate --part.",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--extra", default="", help="More `dfdetect train` flags, e.g. '--device cuda'.")
    a = ap.parse_args()

    items = read_manifest(a.manifest)
    n_all = sum(it.split == "train" for it in items)
    sizes = [n_all if s.strip() == "all" else int(s) for s in a.sizes.split(",")]
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sizes:
        name = f"n{n}"
        run = a.out / name
        sub = a.out / f"{name}.csv"
        if not sub.exists():
            write_manifest(subsample(items, n, "train", a.seed), sub, a.data)
        epochs = max(1, math.ceil(a.budget / n))
        if not (run / "summary.json").exists():
            if (run / "last.pt").exists():
                dfdetect("train", "--resume", str(run))
            else:
                dfdetect(
                    "train",
                    "--data",
                    str(a.data),
                    "--manifest",
                    str(sub),
                    "--model",
                    "efficientnet_lite0",
                    "--weights",
                    "offline",
                    "--img-size",
                    str(a.img_size),
                    "--resize",
                    str(a.img_size),
                    "--warmup-epochs",
                    "0",
                    "--epochs",
                    str(epochs),
                    "--scheduler",
                    "cosine",
                    "--label-smoothing",
                    "0.1",
                    "--batch-size",
                    "32",
                    "--early-stopping",
                    "0",
                    "--threshold",
                    "eer",
                    "--bootstrap",
                    "50",
                    "--workers",
                    "1",
                    "--cache",
                    "--seed",
                    str(a.seed),
                    "--out",
                    str(a.out),
                    "--name",
                    name,
                    *a.extra.split(),
                )
        ev = run / "eval_parts.json"
        if not ev.exists():
            parts = [x for p in a.part for x in ("--part", p)]
            out = dfdetect(
                "evaluate",
                str(run / "best.pt"),
                "--data",
                str(a.data),
                "--manifest",
                str(sub),
                "--split",
                "test",
                "--out",
                str(run / "eval_test_parts"),
                "--bootstrap",
                str(a.bootstrap),
                "--json",
                *parts,
            )
            ev.write_text(out[out.index("{") :])
        m = next(iter(json.loads(ev.read_text()).values()))
        row = {"n_train": n, "epochs": epochs, "all": {k: v for k, v in m.items() if k != "by_source"}}
        row.update(m.get("by_source", {}))
        rows.append(row)

    parts = ["all"] + [k for k in rows[0] if k not in ("n_train", "epochs", "all")]
    (a.out / "results.json").write_text(
        json.dumps(
            {"recipe": vars(a) | {"manifest": str(a.manifest), "data": str(a.data), "out": str(a.out)}, "rows": rows},
            indent=2,
            default=str,
        )
    )
    lines = [
        f"Learning curve: EfficientNet-Lite0 (ImageNet init) at {a.img_size} px, ~{a.budget} training images seen "
        f"per size; test split of `{a.manifest}`; 95% bootstrap CIs ({a.bootstrap} resamples).",
        "",
        "| training images | epochs | part | n test | accuracy | ROC-AUC | TPR at 1% FPR |",
        "|---:|---:|---|---:|---|---|---|",
    ]

    def cell(m: dict, k: str) -> str:
        c = m.get("ci95", {}).get(k)
        return f"{m[k]:.4f} ({c[0]:.3f}-{c[1]:.3f})" if c else f"{m[k]:.4f}"

    for r in rows:
        for p in parts:
            if p in r:
                m = r[p]
                lines.append(
                    f"| {r['n_train']} | {r['epochs']} | {p} | {m['n']} | {cell(m, 'accuracy')} | "
                    f"{cell(m, 'roc_auc')} | {cell(m, 'tpr_at_fpr_1pct')} |"
                )
    (a.out / "table.md").write_text("\n".join(lines) + "\n")
    from dfdetect.core.plots import learning_curve

    # the plot: everything together, each named part, and the folders no part covers (the table has them all)
    covered = {f for p in a.part for f in p.partition("=")[2].split("+")}
    shown = [p for p in parts if p not in covered]
    learning_curve(rows, a.out / "learning_curve.png", shown, PAPER)
    print("\n".join(lines))
    print(f"wrote {a.out / 'table.md'}, {a.out / 'learning_curve.png'}")


if __name__ == "__main__":
    main()
