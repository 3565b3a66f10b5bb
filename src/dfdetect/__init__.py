"""dfdetect: deepfake-image forensics (train, evaluate, predict, explain, serve).

Heavy modules (torch, timm) load on first use, so ``import dfdetect`` and ``dfdetect --help`` stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Detector", "Prediction", "__version__"]

if TYPE_CHECKING:
    from dfdetect.inference import Detector, Prediction


def __getattr__(name: str) -> Any:
    if name in ("Detector", "Prediction"):
        from dfdetect import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'dfdetect' has no attribute {name!r}")
