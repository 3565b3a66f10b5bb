"""Noise analysis: the residual left after denoising, its local variance, and how uniform that is.

A camera picture carries sensor noise that is roughly even across the frame (modulated by brightness);
pasted, smoothed, generated or upscaled regions often have noise of a different level. The uniformity
summary is the coefficient of variation of 16x16 block variances (higher = less uniform). Flat sky,
saturated areas and strong texture also change it: read the map, not just the number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from dfdetect.analysis.forensics.ela import BLOCK, block_means


@dataclass
class NoiseResult:
    residual_std: float
    block_var_cv: float
    """std / mean of the 16x16 block variances of the residual."""
    block_var_ratio: float
    """95th / 5th percentile of block variances (how far apart the noisiest and the cleanest regions are)."""
    residual: np.ndarray
    """(H, W) float32 grey residual = image - 3x3 median."""
    var_map: np.ndarray
    """(H/16, W/16) float32 block variances."""

    def summary(self) -> dict[str, float]:
        return {
            "noise_residual_std": round(self.residual_std, 4),
            "noise_block_var_cv": round(self.block_var_cv, 4),
            "noise_block_var_ratio": round(self.block_var_ratio, 4),
        }

    def image(self) -> Image.Image:
        """Side by side: amplified |residual| (grey) and the local variance map (colour, same size)."""
        from dfdetect.analysis.forensics.render import colormap

        r = np.abs(self.residual)
        top = max(float(np.percentile(r, 99.5)), 1e-6)
        left = Image.fromarray(np.clip(r * (255.0 / top), 0, 255).astype(np.uint8), mode="L").convert("RGB")
        v = np.log1p(self.var_map)
        lo, hi = float(v.min()), float(v.max())
        v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
        right = colormap(v).resize(left.size, Image.Resampling.NEAREST)
        out = Image.new("RGB", (left.width * 2 + 8, left.height), (255, 255, 255))
        out.paste(left, (0, 0))
        out.paste(right, (left.width + 8, 0))
        return out


def noise_residual(img: Image.Image, block: int = BLOCK) -> NoiseResult:
    """Residual of the grey image against its 3x3 median, with block variances and their spread."""
    grey = img.convert("L")
    g = np.asarray(grey, dtype=np.float32)
    den = np.asarray(grey.filter(ImageFilter.MedianFilter(3)), dtype=np.float32)
    res = g - den
    mean_b = block_means(res, block)
    var_b = np.maximum(block_means(res * res, block) - mean_b**2, 0.0)
    m = float(var_b.mean())
    cv = float(var_b.std() / m) if m > 1e-9 else 0.0
    ratio = float((np.percentile(var_b, 95) + 1e-3) / (np.percentile(var_b, 5) + 1e-3))
    return NoiseResult(float(res.std()), cv, ratio, res, var_b.astype(np.float32))
