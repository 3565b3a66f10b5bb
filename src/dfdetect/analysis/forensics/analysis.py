"""One call that runs every classic analysis on one file: ``analyze_file(path) -> ForensicAnalysis``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from dfdetect.analysis.forensics.ela import ElaResult, error_level
from dfdetect.analysis.forensics.jpeg import JpegFacts, jpeg_facts
from dfdetect.analysis.forensics.metadata import Flag, Metadata, read_metadata
from dfdetect.analysis.forensics.noise import NoiseResult, noise_residual
from dfdetect.analysis.forensics.spectrum import SpectrumResult, spectrum
from dfdetect.data.io import ImageLoadError, open_image, sha256_file

log = logging.getLogger(__name__)

ELA_FLAG = 1.2
"""ELA block inconsistency above which a region stands out (untouched JPEGs in tests stay below ~0.8)."""
SPECTRUM_FLAG = 300.0
"""Peak ratio above which a periodic pattern is flagged (natural photos and faces: ~10-100)."""


@dataclass
class ForensicAnalysis:
    path: str
    size_bytes: int | None = None
    sha256: str | None = None
    width: int = 0
    height: int = 0
    metadata: Metadata | None = None
    jpeg: JpegFacts | None = None
    ela: ElaResult | None = None
    noise: NoiseResult | None = None
    spectrum: SpectrumResult | None = None
    flags: list[Flag] = field(default_factory=list)
    error: str | None = None
    image: Image.Image | None = field(default=None, repr=False)
    """The decoded RGB image (EXIF orientation applied)."""

    def summary(self) -> dict[str, Any]:
        """Scalars only: what ``dfdetect analyze --json`` prints."""
        out: dict[str, Any] = {"path": self.path, "size_bytes": self.size_bytes, "sha256": self.sha256}
        if self.error:
            return out | {"error": self.error}
        out |= {"width": self.width, "height": self.height, "format": self.metadata.format if self.metadata else None}
        for part in (self.jpeg, self.ela, self.noise, self.spectrum):
            if part is not None:
                out |= part.summary()
        out["flags"] = [{"code": f.code, "severity": f.severity, "message": f.message} for f in self.flags]
        out["metadata"] = dict(self.metadata.fields) if self.metadata else {}
        return out


def analyze_image(img: Image.Image, ela_quality: int = 90) -> tuple[ElaResult, NoiseResult, SpectrumResult]:
    """The pixel analyses on a decoded image (no file needed)."""
    return error_level(img, ela_quality), noise_residual(img), spectrum(img)


def analyze_file(path: str | Path, ela_quality: int = 90) -> ForensicAnalysis:
    """Every analysis for one file. Unreadable files come back with ``error`` set (never raise)."""
    path = Path(path)
    res = ForensicAnalysis(path=str(path))
    try:
        res.size_bytes = path.stat().st_size
        res.sha256 = sha256_file(path)
    except OSError as e:
        res.error = f"{path}: cannot read ({e.strerror})"
        return res
    try:
        img = open_image(path)
    except ImageLoadError as e:
        res.error = str(e)
        return res
    res.image = img
    res.width, res.height = img.size
    try:
        res.metadata = read_metadata(path)
        res.jpeg = jpeg_facts(path)
    except (OSError, SyntaxError, ValueError) as e:  # decodable pixels but odd headers: keep the pixel analyses
        log.warning("%s: metadata unreadable (%s)", path, e)
        res.flags.append(Flag("metadata_unreadable", "weak", f"metadata could not be read: {e}"))
    res.ela, res.noise, res.spectrum = analyze_image(img, ela_quality)
    if res.metadata:
        res.flags.extend(res.metadata.flags)
    res.flags.extend(_pixel_flags(res))
    return res


def _pixel_flags(res: ForensicAnalysis) -> list[Flag]:
    flags: list[Flag] = []
    j = res.jpeg
    if j and j.is_jpeg and j.quality is not None and not j.standard_tables:
        flags.append(
            Flag(
                "custom_jpeg_tables",
                "info",
                f"non-libjpeg quantization tables (closest IJG quality {j.quality}, mean deviation "
                f"{j.table_error:.1f}): written by a camera or an editor with its own tables",
            )
        )
    if j and j.double_compression_hint:
        flags.append(
            Flag(
                "double_compression_hint",
                "weak",
                f"DCT histograms look double-quantized (score {j.double_compression_score:.2f}): "
                "probably saved as JPEG more than once (hint only; common for shared pictures)",
            )
        )
    if res.ela and res.ela.block_inconsistency > ELA_FLAG:
        flags.append(
            Flag(
                "ela_inconsistent",
                "weak",
                f"some regions recompress differently (ELA inconsistency {res.ela.block_inconsistency:.2f}): "
                "look at the ELA image for a region that stands out beyond edges and texture",
            )
        )
    if res.spectrum and res.spectrum.peak_ratio > SPECTRUM_FLAG:
        fy, fx = res.spectrum.peak_position
        flags.append(
            Flag(
                "periodic_peak",
                "weak",
                f"isolated spectral peak {res.spectrum.peak_ratio:.0f}x its ring at (fy, fx) = ({fy:+.3f}, {fx:+.3f}) "
                "cycles/px: periodic pattern (up-sampling, resizing, JPEG grid, halftone)",
            )
        )
    return flags
