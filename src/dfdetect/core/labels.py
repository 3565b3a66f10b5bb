"""The label convention (DeepfakeBench's): real = 0, fake = 1, every score is P(fake); and the one decision rule."""

from __future__ import annotations

REAL, FAKE = 0, 1
CLASSES = ["real", "fake"]
"""Class names by index: a model's logits are (real, fake)."""
LABELS = {"real": REAL, "fake": FAKE}


def verdict(score: float, threshold: float) -> str:
    """The decision rule: fake when P(fake) >= threshold."""
    return "fake" if score >= threshold else "real"
