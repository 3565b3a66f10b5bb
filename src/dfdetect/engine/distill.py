"""Knowledge distillation: trained checkpoints (teachers) whose predictions a student also learns from.

Each teacher sees the *student's* augmented batch (after MixUp/CutMix), re-rendered for its own input: the
student's normalisation undone, resized to the teacher's input size, the teacher's normalisation applied. Using
the same augmented images for teacher and student ("function matching", Beyer et al. 2022) is what makes
distillation work with strong augmentation; the teachers' soft targets are the mean of their softmax outputs.
Typical use: a fast 256 px student from a slower 320/384 px model or an ensemble of them. The teachers'
forward passes may run in bf16 autocast where the device computes it natively (``amp``): they only make soft
targets, whose probabilities move by about 1e-3 in bf16, and on a 2-core AMX CPU that halves their cost.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dfdetect.core.device import autocast

log = logging.getLogger(__name__)


class Teachers(nn.Module):
    """Frozen teacher networks with their data configs; ``probs(images, student_dc)`` -> mean softmax."""

    def __init__(self, paths: list[str | Path], temperature: float = 1.0, amp: bool = False):
        super().__init__()
        from dfdetect.models.checkpoint import load_checkpoint
        from dfdetect.models.factory import model_from_checkpoint

        nets, self.data_configs = [], []
        for p in paths:
            ckpt = load_checkpoint(p)
            if ckpt.get("kind") == "ensemble":
                raise ValueError(f"{p} is an ensemble: pass its members as separate --teacher paths")
            nets.append(model_from_checkpoint(ckpt).eval().requires_grad_(False))
            self.data_configs.append(ckpt["data_config"])
            log.info("teacher %s (%s, %d px)", p, ckpt["arch"], ckpt["data_config"]["input_size"][-1])
        if not nets:
            raise ValueError("distillation needs at least one teacher checkpoint")
        self.nets = nn.ModuleList(nets)
        self.temperature = float(temperature)
        self.amp = bool(amp)

    def train(self, mode: bool = True) -> Teachers:  # teachers stay in eval mode (BN statistics, no dropout)
        return super().train(False)

    @torch.no_grad()
    def probs(self, images: torch.Tensor, student_dc: dict[str, Any]) -> torch.Tensor:
        mean_s = torch.tensor(student_dc["mean"], device=images.device).view(1, 3, 1, 1)
        std_s = torch.tensor(student_dc["std"], device=images.device).view(1, 3, 1, 1)
        raw = images.float() * std_s + mean_s
        out = []
        for net, dc in zip(self.nets, self.data_configs):
            size = int(dc["input_size"][-1])
            x = raw
            if x.shape[-1] != size or x.shape[-2] != size:
                mode = "bicubic" if dc.get("interpolation", "bicubic") == "bicubic" else "bilinear"
                x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=size < raw.shape[-1])
            mean_t = torch.tensor(dc["mean"], device=x.device).view(1, 3, 1, 1)
            std_t = torch.tensor(dc["std"], device=x.device).view(1, 3, 1, 1)
            with autocast(x.device, self.amp):
                logits = net((x - mean_t) / std_t).float()
            out.append(F.softmax(logits / self.temperature, dim=1))
        return torch.stack(out).mean(0)


def distill_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) at ``temperature``, scaled by T^2 so its gradient size does not depend on T."""
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_p, teacher_probs, reduction="batchmean") * temperature**2
