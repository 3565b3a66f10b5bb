"""Two-backbone fusion: pooled embeddings of two (or more) timm backbones, concatenated into one head.

Name: ``fusion:A+B`` with A, B from the name table, each optionally with its input size, e.g.
``fusion:efficientnet_lite0@320+mobilenetv2@384``. Each member keeps its OWN preprocessing (input size,
resize/crop, mean/std, interpolation from its own data config). To keep the fusion model "a model like any
other" (one ``(N, 3, H, W)`` input for training augmentation, evaluation, ``predict``, Grad-CAM, benchmarks and
ONNX export), the model's stored data config asks for the image at the LARGEST member size in [0, 1]
(mean 0, std 1), and ``forward`` makes each branch's input from it: resize to the member's ``resize`` with its
interpolation (torch ``interpolate``, no antialiasing), centre-crop to its input size, normalise with its mean/std.
The members' data configs are stored in the checkpoint (``data_config["members"]``), so a checkpoint rebuilds
exactly, whatever the member sizes were.

Members come from ``weights``: ``none`` / ``offline`` / ``hub`` for all of them, a comma-separated list with one
source per member (``offline,runs/mnv2/best.pt``; a checkpoint member brings its trained weights AND its data
config, unless the name gives ``@SIZE``), or the path of a fusion checkpoint. Freezing the members (train only
the fusion head) is the ordinary head-only phase: ``get_classifier()`` is the fusion head, so
``freeze_backbone`` and ``--warmup-epochs`` / ``--freeze-backbone`` work unchanged.

Grad-CAM: ``feature_info`` is the FIRST member's (module names prefixed ``members.0.``), so CAMs show where
the first branch's evidence lies (the gradient reaches it through the first member's part of the embedding).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dfdetect.models.backbone import (
    WeightsUnavailableError,
    create_model,
    data_config_for,
    model_from_checkpoint,
    plain_data_config,
)
from dfdetect.models.checkpoint import load_checkpoint
from dfdetect.models.heads import HeadedModel, HeadSurface
from dfdetect.models.registry import get_spec, is_fusion, parse_fusion

log = logging.getLogger(__name__)

_MODES = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}


class BranchPreprocess(nn.Module):
    """[0, 1] image at the fusion input size -> one member's normalised input (its size, crop and mean/std)."""

    def __init__(self, data_config: dict[str, Any], in_size: int):
        super().__init__()
        self.in_size = int(in_size)
        self.size = int(data_config["input_size"][-1])
        self.resize = int(data_config.get("resize", self.size))
        self.mode = _MODES.get(str(data_config.get("interpolation", "bicubic")), "bilinear")
        self.register_buffer("mean", torch.tensor(data_config["mean"], dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(data_config["std"], dtype=torch.float32).view(1, 3, 1, 1), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # While tracing for ONNX the input is the fusion input size (static shapes, no tensor-to-bool warning).
        resize = self.resize != self.in_size if torch.jit.is_tracing() else tuple(x.shape[-2:]) != (self.resize,) * 2
        if resize:
            kw = {} if self.mode == "nearest" else {"align_corners": False}
            x = F.interpolate(x, size=(self.resize, self.resize), mode=self.mode, **kw)
        if self.resize != self.size:
            top = (self.resize - self.size) // 2
            x = x[:, :, top : top + self.size, top : top + self.size]
        return (x - self.mean) / self.std


class FusionHead(nn.Module):
    """Concatenated pooled embeddings -> dropout -> dense."""

    def __init__(self, dims: list[int], num_classes: int, drop_rate: float):
        super().__init__()
        self.dims = list(dims)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(sum(dims), num_classes)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.fc(self.drop(x))


class FusionModel(HeadSurface, nn.Module):
    """Backbones without classifiers (pooled embeddings), per-branch preprocessing, one head on the concatenation."""

    def __init__(
        self,
        names: list[str],
        backbones: list[nn.Module],
        data_configs: list[dict[str, Any]],
        num_classes: int = 2,
        drop_rate: float = 0.2,
    ):
        super().__init__()
        if len(backbones) < 2 or not (len(names) == len(backbones) == len(data_configs)):
            raise ValueError("a fusion model needs two or more members, each with a name and a data config")
        self.member_names = list(names)
        self.member_data_configs = [plain_data_config(dc) for dc in data_configs]
        for b in backbones:
            b.reset_classifier(0)  # timm: forward() now returns the pooled embedding
        self.members = nn.ModuleList(backbones)
        self.prep = nn.ModuleList(BranchPreprocess(dc, self.input_px) for dc in self.member_data_configs)
        dims = [int(getattr(b, "head_hidden_size", None) or b.num_features) for b in backbones]
        self.num_features = sum(dims)
        self.num_classes = num_classes
        self.head = FusionHead(dims, num_classes, drop_rate)
        first = getattr(backbones[0], "feature_info", None) or []
        first = first if isinstance(first, (list, tuple)) else first.get_dicts()
        self.feature_info = [{**dict(d), "module": f"members.0.{d['module']}"} for d in first]
        self.pretrained_cfg: dict[str, Any] = {}
        self.default_cfg = self.pretrained_cfg

    # ---- preprocessing ---------------------------------------------------------------------------
    @property
    def input_px(self) -> int:
        """The fusion input size: the largest member input size."""
        return max(int(dc["input_size"][-1]) for dc in self.member_data_configs)

    def data_config(self) -> dict[str, Any]:
        """The stored preprocessing: the image at the largest member size in [0, 1]; members' configs inside."""
        size = self.input_px
        largest = max(self.member_data_configs, key=lambda dc: int(dc["input_size"][-1]))
        return {
            "input_size": [3, size, size],
            "resize": size,
            "crop_pct": 1.0,
            "interpolation": largest["interpolation"],
            "mean": [0.0, 0.0, 0.0],
            "std": [1.0, 1.0, 1.0],
            "members": [dict(dc) for dc in self.member_data_configs],
        }

    def branch_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's own preprocessed input, made from the [0, 1] fusion input."""
        return [p(x) for p in self.prep]

    # ---- timm-like surface ------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The concatenated pooled embeddings (N, sum of member feature sizes)."""
        return torch.cat([m(xi) for m, xi in zip(self.members, self.branch_inputs(x))], 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


# ---- building ------------------------------------------------------------------------------------------
def _member_sources(name: str, weights: str, n: int) -> list[str]:
    if "," in weights:
        parts = [w.strip() for w in weights.split(",")]
        if len(parts) != n:
            raise ValueError(f"{name} has {n} members but weights gives {len(parts)} sources: {weights!r}")
        return parts
    return [weights] * n


def _sized(dc: dict[str, Any], size: int | None) -> dict[str, Any]:
    if size is None:
        return plain_data_config(dc)
    return plain_data_config({**dc, "input_size": [3, size, size], "resize": size})


def _member(member: str, size: int | None, source: str) -> tuple[nn.Module, dict[str, Any]]:
    """(backbone, data config) of one member from none | offline | hub | a single-model checkpoint."""
    if source in ("none", "offline", "hub"):
        backbone = create_model(member, source, drop_rate=0.0)
        return backbone, data_config_for(backbone, size)
    path = Path(source)
    if not path.is_file():
        raise WeightsUnavailableError(f"member weights must be none, offline, hub or a checkpoint; {path} not found")
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") == "ensemble" or is_fusion(ckpt["arch"]):
        raise ValueError(f"{path}: a fusion member must be a single-backbone checkpoint, not {ckpt['arch']}")
    if get_spec(ckpt["arch"]).name != member:
        raise ValueError(f"{path} holds {ckpt['arch']}, but this fusion member is {member}")
    model = model_from_checkpoint(ckpt)
    if isinstance(model, HeadedModel):  # keep the trained backbone; its head is replaced by the fusion head
        model = model.backbone
        model.reset_classifier(0, "avg")
    log.info("fusion member %s from %s", member, path)
    return model, _sized(ckpt["data_config"], size)


def create_fusion(name: str, weights: str = "none", num_classes: int = 2, drop_rate: float = 0.2) -> FusionModel:
    """Build ``fusion:A+B`` (see the module docstring for ``weights``)."""
    spec = parse_fusion(name)
    members = [m for m, _ in spec]
    if weights not in ("none", "offline", "hub") and "," not in weights:
        path = Path(weights)
        if not path.is_file():
            raise ValueError(
                f"fusion weights must be none, offline, hub, one source per member (a,b) or a fusion checkpoint; "
                f"{path} not found"
            )
        ckpt = load_checkpoint(path)
        if not is_fusion(ckpt.get("arch", "")) or [m for m, _ in parse_fusion(ckpt["arch"])] != members:
            raise ValueError(f"{path} is not a checkpoint of {name} (it holds {ckpt.get('arch')})")
        model = from_checkpoint(ckpt, drop_rate)
        if num_classes != model.num_classes:
            model.reset_classifier(num_classes)
        return model
    built = [_member(m, size, src) for (m, size), src in zip(spec, _member_sources(name, weights, len(spec)))]
    return FusionModel(members, [b for b, _ in built], [dc for _, dc in built], num_classes, drop_rate)


def from_checkpoint(ckpt: dict[str, Any], drop_rate: float = 0.0) -> FusionModel:
    """Rebuild a fusion checkpoint (members' data configs from ``data_config["members"]``), weights loaded strictly."""
    members = [m for m, _ in parse_fusion(ckpt["arch"])]
    dcs = (ckpt.get("data_config") or {}).get("members")
    if not dcs or len(dcs) != len(members):
        raise ValueError(f"{ckpt['arch']}: the checkpoint's data_config has no members' preprocessing")
    model = FusionModel(members, [create_model(m, "none", drop_rate=0.0) for m in members], dcs, 2, drop_rate)
    model.load_state_dict(ckpt["model"])
    return model
