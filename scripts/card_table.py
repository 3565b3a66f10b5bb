"""Print the model card's per-part results table (markdown) from a ``dfdetect evaluate`` metrics.json.

python scripts/card_table.py runs/v2/eval_default_v3/metrics.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "eer", "tpr_at_fpr_1pct")
HEADER = "| test part | n (real/fake) | accuracy | precision | recall | F1 | ROC-AUC | AP | EER | TPR@1%FPR |"


def row(name: str, m: dict) -> str:
    cells = [f"{m[k]:.4f} ({m['ci95'][k][0]:.3f}-{m['ci95'][k][1]:.3f})" for k in KEYS]
    return f"| {name} | {m['n']} ({m['n_real']}/{m['n_fake']}) | " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", type=Path, help="metrics.json written by dfdetect evaluate")
    m = json.loads(ap.parse_args().metrics.read_text())
    lines = [HEADER, "|" + "---|" * 10, row("all three folders", m)]
    lines += [row(name, part) for name, part in m.get("by_source", {}).items()]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
