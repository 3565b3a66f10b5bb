"""Classifier heads on any timm backbone, in place of global average pooling + dense layer.

``HeadedModel`` wraps a timm backbone (its own head removed) and keeps timm's small surface, so training,
``freeze_backbone``, evaluation, export and Grad-CAM treat it like any other detector:
``forward_features`` (the last feature map), ``forward_head``, ``get_classifier()`` (the whole head, so the
head-only warm-up also trains the attention layers) and ``feature_info`` (module names prefixed with
``backbone.`` so ``model.get_submodule(model.feature_info[-1]["module"])`` finds the layer).

Heads:
- ``attention``: CBAM-style channel attention (shared MLP on average- and max-pooled channels) then spatial
  attention (7x7 conv on the channel-wise mean and max), then average pooling, dropout, dense.
- ``attnpool``: learned attention pooling: a 1x1 conv scores every spatial position, softmax over positions,
  the attention-weighted mean of the feature vectors, dropout, dense.
- ``multiscale``: average-pooled features of the last two stages (``feature_info[-3:-1]``, caught with forward
  hooks) and of the final feature map, concatenated, dropout, dense.
"""

from __future__ import annotations

from typing import Any, get_args

import torch
from torch import nn

from dfdetect.core.config import Head

HEADS: tuple[str, ...] = get_args(Head)  # one list of head names: the config's closed set


class ChannelAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3)))
        return x * torch.sigmoid(w)[:, :, None, None]


class SpatialAttention(nn.Module):
    def __init__(self, kernel: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv(s))


class CBAMHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, drop_rate: float):
        super().__init__()
        self.channel = ChannelAttention(channels)
        self.spatial = SpatialAttention()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.spatial(self.channel(x)).mean((2, 3))
        return x if pre_logits else self.fc(self.drop(x))


class AttentionPoolHead(nn.Module):
    def __init__(self, channels: int, num_classes: int, drop_rate: float):
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        a = torch.softmax(self.score(x).flatten(1), 1)  # (N, HW)
        x = torch.einsum("nchw,nhw->nc", x, a.view(a.shape[0], *x.shape[2:]))
        return x if pre_logits else self.fc(self.drop(x))


class MultiScaleHead(nn.Module):
    """Average-pools every map it is given and classifies their concatenation."""

    def __init__(self, channels: list[int], num_classes: int, drop_rate: float):
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(sum(channels), num_classes)

    def forward(self, maps: list[torch.Tensor], pre_logits: bool = False) -> torch.Tensor:
        x = torch.cat([m.mean((2, 3)) for m in maps], 1)
        return x if pre_logits else self.fc(self.drop(x))


def _feature_dicts(backbone: nn.Module) -> list[dict[str, Any]]:
    info = getattr(backbone, "feature_info", None) or []
    return [dict(d) for d in (info if isinstance(info, (list, tuple)) else info.get_dicts())]


class HeadSurface:
    """timm's classifier surface for models whose ``self.head`` (ending in ``fc``) is the trainable head:
    ``forward``, ``get_classifier`` (what the head-only warm-up / frozen-member phase trains), ``reset_classifier``.
    Subclasses provide ``forward_features`` and ``forward_head``."""

    head: nn.Module
    num_classes: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.head.fc.in_features, num_classes)


class HeadedModel(HeadSurface, nn.Module):
    """A timm backbone (classifier and pooling removed) + one of the heads above."""

    def __init__(self, backbone: nn.Module, head: str, num_classes: int = 2, drop_rate: float = 0.2):
        super().__init__()
        if head not in HEADS or head == "linear":
            raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
        backbone.reset_classifier(0, "")
        self.backbone = backbone
        self.head_name = head
        self.num_classes = num_classes
        self.num_features = int(backbone.num_features)
        self.pretrained_cfg = getattr(backbone, "pretrained_cfg", {})
        self.default_cfg = self.pretrained_cfg
        info = _feature_dicts(backbone)
        self.feature_info = [{**d, "module": f"backbone.{d['module']}"} for d in info]
        self._taps: list[str] = []
        self._tapped: dict[str, torch.Tensor] = {}
        if head == "attention":
            self.head = CBAMHead(self.num_features, num_classes, drop_rate)
        elif head == "attnpool":
            self.head = AttentionPoolHead(self.num_features, num_classes, drop_rate)
        else:
            if len(info) < 3:
                raise ValueError(f"{type(backbone).__name__} has too few feature stages for a multiscale head")
            self._taps = [d["module"] for d in info[-3:-1]]
            for name in self._taps:
                backbone.get_submodule(name).register_forward_hook(self._hook(name))
            self.head = MultiScaleHead(
                [d["num_chs"] for d in info[-3:-1]] + [self.num_features], num_classes, drop_rate
            )

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
            self._tapped[name] = output

        return hook

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self._taps:
            maps = [self._tapped.pop(n) for n in self._taps]
            return self.head(maps + [x], pre_logits=pre_logits)
        return self.head(x, pre_logits=pre_logits)
