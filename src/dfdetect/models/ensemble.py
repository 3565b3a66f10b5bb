"""The ensemble model: trained checkpoints combined by soft voting, weighted voting or stacking (one checkpoint file).

Fitting the weights on the validation split is ``dfdetect.engine.ensemble``.

Each member keeps its own preprocessing. To keep the rest of dfdetect unchanged (datasets, ``score_loader``,
``Detector.predict``), an ensemble's input is one *packed* vector per image: every member's preprocessed
CHW array, flattened and concatenated (``EnsembleModel.pack``). ``EnsembleModel.forward`` unpacks it, runs each
member, turns their P(fake) into one combined P(fake) and returns 2-way logits ``[0, logit(p)]``, so
``softmax(logits)[:, 1] == p`` everywhere logits are turned into scores.

Combination (``p_i`` = member i's P(fake), weights/coefficients fitted on the VALIDATION split only):
- ``mean``: ``p = mean_i p_i``
- ``weighted``: ``p = sum_i w_i p_i``, ``w`` on the simplex minimising validation log-loss
- ``stacking``: ``p = sigmoid(b + sum_i c_i logit(p_i))``, a logistic regression on members' validation scores

The checkpoint (``kind: "ensemble"``) embeds every member's weights, arch, head and data config, and names the
member files (paths relative to the ensemble file), so it is self-contained.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

METHODS = ("mean", "weighted", "stacking")
EPS = 1e-6


def logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(EPS, 1 - EPS)
    return torch.log(p) - torch.log1p(-p)


def combine(p: np.ndarray, method: str, weights: list[float], intercept: float = 0.0) -> np.ndarray:
    """Members' P(fake) (N, M) -> ensemble P(fake) (N,), numpy twin of ``EnsembleModel.combine``."""
    t = torch.as_tensor(np.asarray(p, dtype=np.float64))
    return EnsembleModel.combine_static(t, method, torch.as_tensor(weights, dtype=t.dtype), intercept).numpy()


class EnsembleModel(nn.Module):
    def __init__(
        self,
        members: list[nn.Module],
        data_configs: list[dict[str, Any]],
        method: str,
        weights: list[float] | None = None,
        intercept: float = 0.0,
        temperatures: list[float] | None = None,
    ):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
        self.members = nn.ModuleList(members)
        self.data_configs = data_configs
        self.method = method
        m = len(members)
        self.register_buffer("weights", torch.tensor(weights if weights is not None else [1.0 / m] * m))
        self.intercept = float(intercept)
        self.temperatures = temperatures or [1.0] * m
        self.shapes = [tuple(int(x) for x in dc["input_size"]) for dc in data_configs]
        self.sizes = [int(np.prod(s)) for s in self.shapes]

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], build: Callable[[dict[str, Any]], nn.Module]) -> EnsembleModel:
        """Rebuild from an ensemble checkpoint; ``build`` rebuilds one member from its embedded checkpoint
        (``models.factory.model_from_checkpoint``: passed in, because the factory is the layer above)."""
        members = [build(m) for m in ckpt["members"]]
        return cls(
            members,
            [m["data_config"] for m in ckpt["members"]],
            ckpt["method"],
            list(ckpt["weights"]),
            float(ckpt.get("intercept", 0.0)),
            [float(m.get("temperature", 1.0)) for m in ckpt["members"]],
        )

    # ---- input packing -------------------------------------------------------------------------
    def pack(self, img: Any) -> np.ndarray:
        """One decoded image (PIL or HWC uint8) -> the packed float32 vector of all members' inputs."""
        from PIL import Image

        from dfdetect.data.io import to_rgb
        from dfdetect.data.preprocess import preprocess

        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        img = to_rgb(img)
        return np.concatenate([preprocess(img, dc).ravel() for dc in self.data_configs]).astype(np.float32)

    def transform(self, img: Any) -> torch.Tensor:
        """Dataset transform (replaces ``eval_transform(data_config)`` for ensembles)."""
        return torch.from_numpy(self.pack(img))

    def unpack(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.reshape(x.shape[0], -1)
        parts = torch.split(x, self.sizes, dim=1)
        return [p.reshape(x.shape[0], *s) for p, s in zip(parts, self.shapes)]

    # ---- scoring -------------------------------------------------------------------------------
    def member_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Each member's P(fake): (N, M)."""
        cols = [
            torch.softmax(m(xi).float() / t, 1)[:, 1]
            for m, xi, t in zip(self.members, self.unpack(x), self.temperatures)
        ]
        return torch.stack(cols, 1)

    @staticmethod
    def combine_static(p: torch.Tensor, method: str, weights: torch.Tensor, intercept: float) -> torch.Tensor:
        if method == "mean":
            return p.mean(1)
        if method == "weighted":
            return (p * weights.to(p)).sum(1)
        return torch.sigmoid(intercept + (logit(p) * weights.to(p)).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.combine_static(self.member_scores(x), self.method, self.weights, self.intercept)
        z = logit(p.double()).float()
        return torch.stack([torch.zeros_like(z), z], 1)
