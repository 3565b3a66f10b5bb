"""Deterministic perturbations of a decoded image, applied before the model's own preprocessing.

Each perturbation is a pure function ``PIL.Image -> PIL.Image`` (RGB in, RGB out). Noise is seeded, so the same
image under the same condition always gives the same pixels. ``default_conditions()`` lists the sweep that
``dfdetect robustness`` runs: one ``Condition`` per (family, strength), with ``none`` as the shared baseline.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image, ImageFilter

RESAMPLE = Image.Resampling.BICUBIC


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Re-encode as baseline JPEG at ``quality`` (libjpeg/IJG tables, 4:2:0) and decode again."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as out:
        out.load()
        return out.convert("RGB")


def png(img: Image.Image) -> Image.Image:
    """Re-encode losslessly as PNG and decode again (pixels unchanged; the control for the file container)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="PNG")
    buf.seek(0)
    with Image.open(buf) as out:
        out.load()
        return out.convert("RGB")


def rescale(img: Image.Image, factor: float, quality: int | None = 95) -> Image.Image:
    """Resize both sides by ``factor`` (PIL bicubic, antialiased when shrinking), then re-encode as JPEG ``quality``."""
    w, h = img.size
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    out = img.convert("RGB").resize(size, RESAMPLE)
    return jpeg(out, quality) if quality else out


def gaussian_blur(img: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation ``sigma`` pixels (PIL's GaussianBlur radius is the sigma)."""
    return img.convert("RGB").filter(ImageFilter.GaussianBlur(radius=float(sigma)))


def gaussian_noise(img: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    """Add i.i.d. Gaussian noise of std ``sigma`` (0-255 scale) per pixel and channel, seeded; clip and round."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    noisy = arr + rng.normal(0.0, float(sigma), arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def center_crop(img: Image.Image, fraction: float) -> Image.Image:
    """Keep the central ``fraction`` of each side (no resize: the model's preprocessing resizes it)."""
    w, h = img.size
    cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.convert("RGB").crop((left, top, left + cw, top + ch))


def identity(img: Image.Image) -> Image.Image:
    return img.convert("RGB")


def image_seed(key: str, base: int = 0) -> int:
    """A stable per-image seed (CRC32 of the path plus ``base``): the same on every machine and run."""
    return (zlib.crc32(key.encode()) + int(base)) & 0xFFFFFFFF


@dataclass(frozen=True)
class Condition:
    """One sweep condition: a family (the plot it belongs to), a strength (its x value) and the function."""

    name: str
    family: str
    strength: float
    fn: Callable[..., Image.Image]
    seeded: bool = False
    """True when ``fn`` takes a ``seed`` keyword (noise)."""

    def apply(self, img: Image.Image, seed: int = 0) -> Image.Image:
        return self.fn(img, seed=seed) if self.seeded else self.fn(img)


FAMILIES: dict[str, dict[str, object]] = {
    # x label, the x value of the unperturbed baseline, and whether smaller x means a stronger perturbation
    "jpeg": {"xlabel": "JPEG quality (100 = unperturbed)", "baseline": 100.0, "reverse": True},
    "resize": {"xlabel": "scale factor, then JPEG q95 (1 = unperturbed)", "baseline": 1.0, "reverse": False},
    "blur": {"xlabel": "Gaussian blur sigma, px (0 = unperturbed)", "baseline": 0.0, "reverse": False},
    "noise": {"xlabel": "Gaussian noise sigma on 0-255 (0 = unperturbed)", "baseline": 0.0, "reverse": False},
    "crop": {"xlabel": "centre crop fraction, then the model's resize (1 = none)", "baseline": 1.0, "reverse": True},
    "format": {"xlabel": "both classes re-encoded as", "baseline": 0.0, "reverse": False},
}


def default_conditions(
    jpeg_qualities: Sequence[int] = (95, 75, 50, 30),
    scales: Sequence[float] = (0.5, 0.75, 1.25),
    blur_sigmas: Sequence[float] = (0.5, 1.0, 2.0),
    noise_sigmas: Sequence[float] = (2.0, 5.0, 10.0),
    crop_fractions: Sequence[float] = (0.8,),
) -> list[Condition]:
    """The standard sweep: ``none`` first, then one condition per family and strength."""
    conds = [Condition("none", "none", 0.0, identity)]
    conds += [Condition(f"jpeg_q{q}", "jpeg", float(q), partial(jpeg, quality=q)) for q in jpeg_qualities]
    conds += [Condition(f"resize_{s:g}", "resize", float(s), partial(rescale, factor=s)) for s in scales]
    conds += [Condition(f"blur_{s:g}", "blur", float(s), partial(gaussian_blur, sigma=s)) for s in blur_sigmas]
    conds += [
        Condition(f"noise_{s:g}", "noise", float(s), partial(gaussian_noise, sigma=s), seeded=True)
        for s in noise_sigmas
    ]
    conds += [Condition(f"crop_{f:g}", "crop", float(f), partial(center_crop, fraction=f)) for f in crop_fractions]
    conds += [
        Condition("format_png", "format", 1.0, png),
        Condition("format_jpeg_q90", "format", 2.0, partial(jpeg, quality=90)),
    ]
    return conds


def select_conditions(names: Sequence[str] | None) -> list[Condition]:
    """Filter the default sweep by condition or family names (``none`` is always kept as the baseline)."""
    conds = default_conditions()
    if not names:
        return conds
    wanted = {n.strip() for raw in names for n in raw.split(",") if n.strip()}
    known = {c.name for c in conds} | {c.family for c in conds}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return [c for c in conds if c.name == "none" or c.name in wanted or c.family in wanted]
