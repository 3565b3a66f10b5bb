"""JPEG facts: quality estimated from the quantization tables, and a double-compression hint.

Quality: the file's tables (Pillow's ``img.quantization``, natural order) are compared with the IJG standard
tables scaled for every quality 1..100; the closest is reported with how well it fits (0 = exactly libjpeg's
tables; cameras and editors such as Photoshop use their own, which is itself a clue to the encoder).

Double-compression hint: when a JPEG is decoded and saved again with a different quantization step, the
histograms of its DCT coefficients (in units of the current step) get periodic gaps or bumps. We measure
the strongest non-DC periodicity in those histograms for a few low-frequency coefficients. It works best when
the first compression was the stronger one (lower quality), fails when the image was resized or cropped off
the 8x8 grid in between, and is a *hint*, never a finding on its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

# ITU-T T.81 Annex K tables (natural row-major order), as used by libjpeg's jpeg_set_quality
STD_LUMA = np.array(
    [
        16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
    ],
    dtype=np.float64,
)  # fmt: skip
STD_CHROMA = np.array(
    [
        17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
        24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
        99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
        99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
    ],
    dtype=np.float64,
)  # fmt: skip
DC_COEFFS = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1))
HIST_RANGE = 40
DOUBLE_HINT_LIMIT = 0.35


@dataclass
class JpegFacts:
    is_jpeg: bool
    quality: int | None = None
    """Closest IJG quality (None when not a JPEG or no tables)."""
    table_error: float | None = None
    """Mean |table - IJG table at that quality| per entry (0 = libjpeg-style encoder)."""
    standard_tables: bool | None = None
    n_tables: int = 0
    subsampling: str | None = None
    progressive: bool = False
    double_compression_score: float | None = None
    """Strongest periodicity (0..1) in the DCT-coefficient histograms; high = re-saved JPEG (hint)."""
    double_compression_hint: bool | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "jpeg": self.is_jpeg,
            "jpeg_quality": self.quality,
            "jpeg_table_error": None if self.table_error is None else round(self.table_error, 3),
            "jpeg_standard_tables": self.standard_tables,
            "jpeg_subsampling": self.subsampling,
            "jpeg_double_compression_score": None
            if self.double_compression_score is None
            else round(self.double_compression_score, 4),
            "jpeg_double_compression_hint": self.double_compression_hint,
        }


def ijg_table(base: np.ndarray, quality: int) -> np.ndarray:
    """libjpeg's jpeg_quality_scaling + jpeg_add_quant_table(force_baseline=TRUE)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 / q if q < 50 else 200 - 2 * q
    return np.clip(np.floor((base * scale + 50) / 100), 1, 255)


def estimate_quality(tables: dict[int, list[int]]) -> tuple[int, float]:
    """(closest IJG quality, mean absolute deviation per table entry) for Pillow's ``quantization`` dict."""
    if not tables:
        raise ValueError("no quantization tables")
    ids = sorted(tables)
    qt = [np.asarray(tables[i], dtype=np.float64) for i in ids]
    best_q, best_err = 50, float("inf")
    for q in range(1, 101):
        errs = [np.abs(t - ijg_table(STD_LUMA if k == 0 else STD_CHROMA, q)).mean() for k, t in enumerate(qt[:2])]
        err = float(np.mean(errs))
        if err < best_err - 1e-9:
            best_q, best_err = q, err
    return best_q, best_err


_DCT8 = np.array(
    [[np.sqrt((1 if k == 0 else 2) / 8) * np.cos((2 * n + 1) * k * np.pi / 16) for n in range(8)] for k in range(8)]
)


def block_dct(y: np.ndarray) -> np.ndarray:
    """(H, W) grey -> (H/8, W/8, 8, 8) orthonormal 2-D DCT-II of each 8x8 block (JPEG grid, level-shifted)."""
    h, w = (y.shape[0] // 8) * 8, (y.shape[1] // 8) * 8
    b = (y[:h, :w].astype(np.float64) - 128.0).reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)
    return np.einsum("ij,abjk,lk->abil", _DCT8, b, _DCT8)


def histogram_periodicity(values: np.ndarray, half_range: int = HIST_RANGE) -> float:
    """Strongest non-DC Fourier peak of the histogram of integer ``values`` after removing its smooth envelope.

    A single-compressed coefficient (in units of its own step) has a smooth, Laplacian-like histogram;
    double quantization makes it comb-like. Returns |H(f)| / |H(0)| of the detrended histogram, in 0..1.
    """
    v = values[(np.abs(values) <= half_range) & (values != 0)]  # zero bin dominates and carries no period
    if v.size < 200:
        return 0.0
    h = np.bincount((v + half_range).astype(int), minlength=2 * half_range + 1).astype(np.float64)
    h[half_range] = (h[half_range - 1] + h[half_range + 1]) / 2
    k = np.ones(5) / 5
    env = np.convolve(h, k, mode="same") + 1.0
    d = h / env - 1.0
    w = np.sqrt(env / env.max())  # trust populated bins more than the sparse tails
    spec = np.abs(np.fft.rfft(d * w))
    norm = np.sum(np.abs(d * w)) + 1e-9
    return float(spec[2:].max() / norm) if spec.size > 2 else 0.0


def double_compression_score(img: Image.Image, luma_table: list[int]) -> float | None:
    """Median over a few low-frequency AC coefficients of ``histogram_periodicity`` (decoded luma, JPEG grid)."""
    y = np.asarray(img, dtype=np.float64)
    coeffs = block_dct(y)
    q = np.asarray(luma_table, dtype=np.float64).reshape(8, 8)
    scores = []
    for u, v in DC_COEFFS:
        if q[u, v] < 2:
            continue  # a step of 1 leaves no room for double-quantization gaps
        scores.append(histogram_periodicity(np.round(coeffs[:, :, u, v] / q[u, v]).ravel()))
    return float(np.median(scores)) if scores else None  # all steps 1 (quality ~95+): not measurable


def jpeg_facts(path: str | Path) -> JpegFacts:
    """Facts about the file's JPEG encoding (``is_jpeg`` False for other formats)."""
    with Image.open(path) as img:
        if img.format != "JPEG":
            return JpegFacts(is_jpeg=False)
        tables: dict[int, list[int]] = dict(getattr(img, "quantization", None) or {})
        facts = JpegFacts(is_jpeg=True, n_tables=len(tables), progressive=bool(img.info.get("progressive")))
        try:
            from PIL import JpegImagePlugin

            facts.subsampling = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(JpegImagePlugin.get_sampling(img), "other")
        except (AttributeError, ValueError):
            facts.subsampling = None
        if img.mode == "L":
            facts.subsampling = "grey"
        if not tables:
            return facts
        facts.quality, facts.table_error = estimate_quality(tables)
        facts.standard_tables = facts.table_error < 0.5
        if img.mode in ("RGB", "L", "YCbCr"):
            img.draft("L", img.size)  # decode the luma plane directly: no colour conversion rounding
            img.load()
            luma = img if img.mode == "L" else img.convert("L")
            facts.double_compression_score = double_compression_score(luma, tables[min(tables)])
            if facts.double_compression_score is not None:
                facts.double_compression_hint = facts.double_compression_score > DOUBLE_HINT_LIMIT
        return facts
