"""Train and eval preprocessing built from a model's stored data config.

Eval uses the torch-free ``dfdetect.data.preprocess`` (PIL resize + centre crop + normalise), the same
code ``predict``, the API and ONNX inference use. Train adds the paper's augmentation (rotation,
scaling, horizontal flip) and optional JPEG re-compression and blur with torchvision transforms v2,
applied to the decoded image before resizing, as a platform would process an upload.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from dfdetect.core.config import AugmentConfig
from dfdetect.data.preprocess import preprocess


def _interp(name: str) -> InterpolationMode:
    return InterpolationMode(name) if name in {m.value for m in InterpolationMode} else InterpolationMode.BICUBIC


class EvalTransform:
    """PIL image (or HWC uint8 array) -> normalised CHW float tensor."""

    def __init__(self, data_config: dict[str, Any]):
        self.data_config = data_config

    def __call__(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        if isinstance(img, np.ndarray):
            img = Image.fromarray(img)
        return torch.from_numpy(preprocess(img, self.data_config))


def eval_transform(data_config: dict[str, Any]) -> EvalTransform:
    return EvalTransform(data_config)


def train_transform(data_config: dict[str, Any], aug: AugmentConfig) -> T.Compose:
    size = int(data_config["input_size"][-1])
    resize = int(data_config.get("resize", size))
    interp = _interp(data_config["interpolation"])
    ops: list[Any] = [T.ToImage()]
    if aug.jpeg_prob > 0:
        lo, hi = aug.jpeg_quality
        ops.append(T.RandomApply([T.JPEG(quality=(int(lo), int(hi)))], p=aug.jpeg_prob))
    if aug.blur_prob > 0:
        lo, hi = aug.blur_sigma
        ops.append(T.RandomApply([T.GaussianBlur(kernel_size=7, sigma=(float(lo), float(hi)))], p=aug.blur_prob))
    if aug.rotation > 0 or aug.scale > 0:
        ops.append(
            T.RandomAffine(
                degrees=aug.rotation,
                scale=(1 - aug.scale, 1 + aug.scale) if aug.scale > 0 else None,
                interpolation=InterpolationMode.BILINEAR,
            )
        )
    ops.append(T.Resize(resize, interpolation=interp, antialias=True))
    ops.append(T.RandomCrop(size) if aug.random_crop else T.CenterCrop(size))
    if aug.hflip > 0:
        ops.append(T.RandomHorizontalFlip(aug.hflip))
    ops.extend(
        [
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=list(data_config["mean"]), std=list(data_config["std"])),
        ]
    )
    return T.Compose(ops)
