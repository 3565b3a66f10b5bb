"""Error level analysis (ELA): recompress at a known JPEG quality and look at what changed.

Regions that were already compressed at that quality change little; regions with a different compression
history (pasted from another JPEG, retouched, or never compressed) often change more. The block-level
inconsistency compares the busiest 16x16 blocks with the typical block; edges and texture raise it too, so it
is an indicator for a human to look at, not a detector. Saving the whole picture again at the same quality
largely erases the trace.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

BLOCK = 16


@dataclass
class ElaResult:
    quality: int
    mean: float
    """Mean absolute error level (0..255 scale, max over RGB)."""
    p99: float
    block_inconsistency: float
    """(95th percentile - median) / (median + 1) of the 16x16 block means, each averaged with its 3x3 block
    neighbourhood: large when a region (not single edges) recompresses very differently from the rest."""
    diff: np.ndarray
    """(H, W) uint8 absolute difference, max over channels (not amplified)."""

    def summary(self) -> dict[str, float]:
        return {
            "ela_quality": self.quality,
            "ela_mean": round(self.mean, 4),
            "ela_p99": round(self.p99, 4),
            "ela_block_inconsistency": round(self.block_inconsistency, 4),
        }

    def image(self) -> Image.Image:
        """Amplified difference for display: scaled so the 99.5th percentile is white."""
        top = max(float(np.percentile(self.diff, 99.5)), 1.0)
        amp = np.clip(self.diff.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(amp, mode="L")


def block_means(a: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Mean over non-overlapping block x block tiles (edges cropped)."""
    h, w = (a.shape[0] // block) * block, (a.shape[1] // block) * block
    if h == 0 or w == 0:
        return np.array([[float(a.mean())]])
    return a[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))


def _box3(a: np.ndarray) -> np.ndarray:
    """3x3 mean over a block map (edge-padded), so a region counts more than one busy block."""
    p = np.pad(a, 1, mode="edge")
    return sum(p[i : i + a.shape[0], j : j + a.shape[1]] for i in range(3) for j in range(3)) / 9.0


def error_level(img: Image.Image, quality: int = 90) -> ElaResult:
    """ELA of a decoded RGB image at JPEG ``quality`` (1..100)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"ELA quality must be in 1..100, not {quality}")
    rgb = img.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as re:
        again = np.asarray(re.convert("RGB"), dtype=np.int16)
    diff = np.abs(np.asarray(rgb, dtype=np.int16) - again).max(axis=2).astype(np.uint8)
    blocks = _box3(block_means(diff.astype(np.float32)))
    med = float(np.median(blocks))
    incons = (float(np.percentile(blocks, 95)) - med) / (med + 1.0)
    return ElaResult(quality, float(diff.mean()), float(np.percentile(diff, 99)), incons, diff)
