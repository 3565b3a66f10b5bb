"""Score maths on P(fake), written once: two-class softmax, logit, sigmoid and temperature.

For two classes softmax(z / T)[1] = sigmoid((z1 - z0) / T), so a score, its logit margin and a temperature
convert into one another exactly; every layer that turns logits into scores (or rescales them) uses these.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EPS = 1e-7
"""Probabilities are clipped to [EPS, 1 - EPS] before taking logits (float32 softmax saturates at 1.0)."""


def softmax_fake(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(fake) = softmax(logits / T)[:, 1] for (N, 2) logits (real, fake), computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


def logit(p: Any, eps: float = EPS) -> np.ndarray:
    """The 2-class logit margin z1 - z0 = log(p / (1 - p)) (exact for softmax; p clipped to [eps, 1 - eps])."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def sigmoid(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def with_temperature(p: Any, temperature: float) -> np.ndarray:
    """Scores of a temperature-scaled model from its T = 1 scores: sigmoid(logit(p) / T)."""
    p = np.asarray(p, dtype=np.float64)
    return p if float(temperature) == 1.0 else sigmoid(logit(p) / float(temperature))
