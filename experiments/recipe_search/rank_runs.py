"""Rank finished runs by validation AUC (then validation loss) and write recipes.md/recipes.csv.

Optionally export the top-k best.pt as fp16 safetensors (``--export K --to DIR``) and pack the
small artifacts (logs, histories, metrics, figures) into one tarball (``--pack FILE``).
"""

from __future__ import annotations

import argparse
import csv
import json
import tarfile
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path)
    ap.add_argument("--export", type=int, default=0)
    ap.add_argument("--to", type=Path, default=None)
    ap.add_argument("--pack", type=Path, default=None)
    a = ap.parse_args()
    rows = []
    for run in sorted(p for p in a.runs.iterdir() if (p / "best.pt").is_file()):
        best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        cmd = (a.runs / f"{run.name}.cmd").read_text().strip() if (a.runs / f"{run.name}.cmd").exists() else ""
        hist = list(csv.DictReader(open(run / "history.csv")))
        secs = sum(float(h["seconds"]) for h in hist)
        rows.append(
            {
                "run": run.name,
                "arch": best["arch"],
                "input": best["data_config"]["input_size"][-1],
                "best_epoch": best["epoch"],
                "epochs_run": len(hist),
                "valid_auc": best["valid"]["valid_auc"],
                "valid_acc": best["valid"]["valid_acc"],
                "valid_loss": best["valid"]["valid_loss"],
                "test_acc": summary.get("test", {}).get("accuracy"),
                "test_auc": summary.get("test", {}).get("roc_auc"),
                "threshold": best.get("threshold"),
                "train_seconds": round(secs, 1),
                "command": cmd,
            }
        )
    rows.sort(key=lambda r: (-r["valid_auc"], r["valid_loss"]))
    with open(a.runs / "recipes.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["run"])
        w.writeheader()
        w.writerows(rows)
    lines = [
        "| rank | run | arch | input | best epoch / run | valid AUC | valid acc | test acc | test AUC | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        ta = f"{r['test_acc']:.4f}" if r["test_acc"] is not None else "-"
        tu = f"{r['test_auc']:.4f}" if r["test_auc"] is not None else "-"
        lines.append(
            f"| {i} | {r['run']} | {r['arch']} | {r['input']} | {r['best_epoch']} / {r['epochs_run']} | "
            f"{r['valid_auc']:.4f} | {r['valid_acc']:.4f} | {ta} | {tu} | {r['train_seconds']} |"
        )
    (a.runs / "recipes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if a.export and a.to:
        from dfdetect.models.checkpoint import load_checkpoint, save_safetensors

        a.to.mkdir(parents=True, exist_ok=True)
        for r in rows[: a.export]:
            save_safetensors(load_checkpoint(a.runs / r["run"] / "best.pt"), a.to / f"{r['run']}.safetensors")
    if a.pack:
        with tarfile.open(a.pack, "w:gz") as tar:
            for p in sorted(a.runs.rglob("*")):
                if p.is_file() and p.suffix not in (".pt",):
                    tar.add(p, arcname=p.relative_to(a.runs.parent))


if __name__ == "__main__":
    main()
