"""One factory over the name table: build any detector by name or rebuild it from a checkpoint.

A detector is a timm model with a 2-way head (real = 0, fake = 1), so it keeps timm's small surface:
``forward_features``, ``forward_head``, ``feature_info``, ``get_classifier``. Weight sources:
``none`` (random init), ``offline`` (ImageNet weights from pip packages), ``hub`` (timm download), or a
path to a checkpoint written by ``dfdetect train``. Single backbones come from ``models.backbone``;
``fusion:A+B`` names from ``models.fusion``; ensemble checkpoints from ``models.ensemble``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dfdetect.core.labels import CLASSES
from dfdetect.models import backbone
from dfdetect.models.backbone import (
    NUM_CLASSES,
    WeightsUnavailableError,
    freeze_backbone,
    head_of,
    load_state_by_order,
    offline_weights_path,
    plain_data_config,
)
from dfdetect.models.ensemble import EnsembleModel
from dfdetect.models.fusion import FusionModel, create_fusion, from_checkpoint
from dfdetect.models.registry import is_fusion

__all__ = [
    "CLASSES",
    "NUM_CLASSES",
    "WeightsUnavailableError",
    "create_model",
    "data_config_for",
    "freeze_backbone",
    "head_of",
    "load_state_by_order",
    "model_from_checkpoint",
    "offline_weights_path",
    "plain_data_config",
]


def create_model(
    name: str,
    weights: str = "none",
    num_classes: int = NUM_CLASSES,
    drop_rate: float = 0.2,
    head: str = "linear",
) -> nn.Module:
    """Build a detector by name. ``weights``: none | offline | hub | path to a dfdetect checkpoint.

    ``head``: linear (timm's pooling + dense) or a head from ``dfdetect.models.heads`` (attention, attnpool,
    multiscale) on the same backbone; ImageNet weights go into the backbone either way.

    ``fusion:A+B`` names build a two-backbone fusion model (``dfdetect.models.fusion``); their ``weights`` may
    also name one source per member (``offline,runs/mnv2/best.pt``).
    """
    if is_fusion(name):
        if head != "linear":
            raise ValueError(
                f"a fusion model has its own head (concatenated embeddings + dense); --head {head} does not apply"
            )
        return create_fusion(name, weights, num_classes, drop_rate)
    return backbone.create_model(name, weights, num_classes, drop_rate, head)


def model_from_checkpoint(ckpt: dict[str, Any], drop_rate: float = 0.0) -> nn.Module:
    """Rebuild a checkpoint's model (arch + head) and load its weights strictly; fusion and ensembles included."""
    if ckpt.get("kind") == "ensemble":
        return EnsembleModel.from_checkpoint(ckpt, model_from_checkpoint)
    if is_fusion(ckpt["arch"]):
        try:
            return from_checkpoint(ckpt, drop_rate)
        except RuntimeError as e:  # load_state_dict: keys or shapes do not fit
            raise ValueError(f"weights do not fit {ckpt['arch']}: {e}") from e
    return backbone.model_from_checkpoint(ckpt, drop_rate)


def data_config_for(model: nn.Module, img_size: int | None = None, resize_to: int | None = None) -> dict[str, Any]:
    """The model's preprocessing (timm data config), made plain for checkpoints and exports.

    ``crop_pct`` is 1.0 unless ``resize_to`` says otherwise: face crops are framed by the dataset,
    so cutting their borders away at test time (timm's 0.875) would differ from training.
    A fusion model returns its own config (the image at the largest member size in [0, 1], members' configs
    inside); its member sizes are set in its name (``fusion:a@320+b@384``), not by ``img_size``.
    """
    if isinstance(model, FusionModel):
        dc = model.data_config()
        if (img_size and int(img_size) != dc["input_size"][-1]) or (resize_to and int(resize_to) != dc["resize"]):
            raise ValueError(
                "--img-size/--resize do not apply to a fusion model: give member sizes in its name, "
                f"e.g. fusion:efficientnet_lite0@320+mobilenetv2@384 (this one takes {dc['input_size'][-1]} px)"
            )
        return dc
    return backbone.data_config_for(model, img_size, resize_to)
