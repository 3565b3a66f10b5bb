"""Frequency view: the centred log-magnitude spectrum of the grey image, and a periodic-peak statistic.

Up-sampling layers in GANs and some diffusion decoders leave periodic patterns that show as bright isolated
points off the centre. The peak statistic compares each high-frequency coefficient with the median of its
ring (same radius), so the natural 1/f fall-off cancels: ``peak_ratio`` is the strongest such excess, in
power ratio (1 = nothing stands out). JPEG's 8x8 grid also makes peaks at multiples of 1/8 of the sampling
rate, and resizing, screenshots and halftone prints make their own: a peak is an indicator, not proof.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

MAX_SIDE = 1024
HF_START = 0.25
"""The high-frequency band starts at this fraction of the Nyquist radius."""


@dataclass
class SpectrumResult:
    peak_ratio: float
    """max over the high band of |F|^2 / median(|F|^2 at the same radius)."""
    peak_position: tuple[float, float]
    """(fy, fx) of that peak in cycles/pixel (-0.5..0.5)."""
    hf_energy: float
    """Fraction of spectral power above HF_START of Nyquist (excluding DC)."""
    profile: np.ndarray
    """Azimuthally averaged log power, radius 0..Nyquist (one value per integer radius)."""
    log_mag: np.ndarray
    """(H, W) centred log(1 + |F|)."""

    def summary(self) -> dict[str, float]:
        return {
            "spectrum_peak_ratio": round(self.peak_ratio, 3),
            "spectrum_peak_fy": round(self.peak_position[0], 4),
            "spectrum_peak_fx": round(self.peak_position[1], 4),
            "spectrum_hf_energy": round(self.hf_energy, 5),
        }

    def image(self) -> Image.Image:
        from dfdetect.analysis.forensics.render import colormap

        lm = self.log_mag
        lo, hi = np.percentile(lm, 1), np.percentile(lm, 99.9)
        return colormap(np.clip((lm - lo) / max(hi - lo, 1e-6), 0, 1))


def spectrum(img: Image.Image, max_side: int = MAX_SIDE) -> SpectrumResult:
    """Spectrum of a (centre-cropped to ``max_side``) grey image, Hann-windowed against edge leakage."""
    g = np.asarray(img.convert("L"), dtype=np.float64)
    h, w = g.shape
    if h > max_side or w > max_side:  # crop, never resize: resampling would smear the periodic traces
        y0, x0 = max((h - max_side) // 2, 0), max((w - max_side) // 2, 0)
        g = g[y0 : y0 + max_side, x0 : x0 + max_side]
        h, w = g.shape
    g = (g - g.mean()) * np.outer(np.hanning(h), np.hanning(w))
    f = np.fft.fftshift(np.fft.fft2(g))
    power = np.abs(f) ** 2
    fy = (np.arange(h) - h // 2) / h
    fx = (np.arange(w) - w // 2) / w
    r = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2) / 0.5  # 1.0 = Nyquist along an axis
    rint = np.minimum((r * (min(h, w) // 2)).astype(int), min(h, w) // 2)
    nbin = int(rint.max()) + 1
    # ring medians (the baseline each coefficient is compared with)
    order = np.argsort(rint, axis=None, kind="stable")
    rs, ps = rint.ravel()[order], power.ravel()[order]
    bounds = np.searchsorted(rs, np.arange(nbin + 1))
    ring_med = np.array([np.median(ps[a:b]) if b > a else 0.0 for a, b in zip(bounds[:-1], bounds[1:])])
    ring_mean_log = np.array([np.log1p(ps[a:b]).mean() if b > a else 0.0 for a, b in zip(bounds[:-1], bounds[1:])])
    band = (r >= HF_START) & (r <= 1.0)
    ratio = power / (ring_med[rint] + 1e-12)
    ratio[~band] = 0.0
    iy, ix = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    total = float(power.sum() - power[h // 2, w // 2])
    hf = float(power[r >= HF_START].sum() / total) if total > 0 else 0.0
    return SpectrumResult(
        float(ratio[iy, ix]), (float(fy[iy]), float(fx[ix])), hf, ring_mean_log, np.log1p(np.abs(f)).astype(np.float32)
    )
