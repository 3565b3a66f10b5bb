"""Classic image forensics beside the model's verdict: metadata, ELA, noise, spectrum, JPEG facts, HTML report.

Every output is an *indicator*, not proof: metadata can be stripped or forged, and each pixel statistic also
reacts to ordinary processing (resizing, re-saving, filters). The report shows them next to the detector's
score so an analyst can argue a finding from more than one number.

    from dfdetect.analysis.forensics import analyze_file
    a = analyze_file("photo.jpg")
    a.summary()          # scalars + flags + metadata table
    a.ela.image()        # amplified ELA map (PIL)
"""

from __future__ import annotations

from dfdetect.analysis.forensics.analysis import ForensicAnalysis, analyze_file, analyze_image
from dfdetect.analysis.forensics.ela import ElaResult, error_level
from dfdetect.analysis.forensics.jpeg import JpegFacts, estimate_quality, jpeg_facts
from dfdetect.analysis.forensics.metadata import Flag, Metadata, read_metadata
from dfdetect.analysis.forensics.noise import NoiseResult, noise_residual
from dfdetect.analysis.forensics.spectrum import SpectrumResult, spectrum

__all__ = [
    "ElaResult",
    "Flag",
    "ForensicAnalysis",
    "JpegFacts",
    "Metadata",
    "NoiseResult",
    "SpectrumResult",
    "analyze_file",
    "analyze_image",
    "error_level",
    "estimate_quality",
    "jpeg_facts",
    "noise_residual",
    "read_metadata",
    "spectrum",
]
