"""dfdetect: deepfake-image forensics (train, evaluate, predict, explain, serve).

Heavy modules (torch, timm) load on first use, so ``import dfdetect`` and ``dfdetect --help`` stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dfdetect.core.version import __version__

__all__ = ["Detector", "Prediction", "explain_image", "__version__"]

if TYPE_CHECKING:
    from dfdetect.analysis.explain import explain_image
    from dfdetect.runtime.detector import Detector, Prediction


def __getattr__(name: str) -> Any:
    # The public API, importable from the top; this package is the one place above every layer.
    if name in ("Detector", "Prediction"):
        from dfdetect.runtime import detector

        return getattr(detector, name)
    if name == "explain_image":
        from dfdetect.analysis.explain import explain_image

        return explain_image
    raise AttributeError(f"module 'dfdetect' has no attribute {name!r}")
