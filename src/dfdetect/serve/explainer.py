"""Grad-CAM for ``POST /explain``: ``ExplainRunner`` keeps a PyTorch copy of the served model (gradients need torch,
whatever backend serves /predict), loads it on the first request, and runs one explanation at a time.

When explanations cannot run (``dfdetect.analysis.explain`` missing, no PyTorch weights beside an .onnx, a
checkpoint that does not load) every request is told why (501), in words without server paths.
"""

from __future__ import annotations

import importlib
import logging
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from dfdetect.serve.errors import describe, without_paths

log = logging.getLogger(__name__)


class ExplainRunner:
    """Grad-CAM on a PyTorch copy of the model: loaded on first use, one explanation at a time."""

    def __init__(self, model: str | None, device: str):
        self.model = model
        self.device = device
        self._lock = threading.Lock()
        self._detector: Any = None
        self._explain: Any = None
        self.unavailable: str | None = None
        self.tried = False

    def torch_checkpoint(self) -> Path | None:
        from dfdetect.runtime.detector import DEFAULT_WEIGHTS

        if self.model is None:
            return DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.is_file() else None
        p = Path(self.model)
        if p.suffix != ".onnx":
            return p
        for suffix in (".safetensors", ".pt"):
            if p.with_suffix(suffix).is_file():
                return p.with_suffix(suffix)
        return None

    def _ensure(self) -> None:
        """Load on first use; sets ``unavailable`` (the 501 message) when explanations cannot run."""
        if self.tried:
            return
        self.tried = True
        try:
            self._explain = importlib.import_module("dfdetect.analysis.explain").explain_image
        except ImportError as e:
            self.unavailable = (
                "Grad-CAM explanations are not available in this installation "
                f"(dfdetect.analysis.explain: {without_paths(str(e))})"
            )
            return
        except AttributeError:
            self.unavailable = "Grad-CAM explanations are not available: dfdetect.analysis.explain has no explain_image"
            return
        ckpt = self.torch_checkpoint()
        if ckpt is None:
            self.unavailable = (
                "explanations need the PyTorch weights (.pt or .safetensors) of the served model; "
                "put them beside the .onnx file or serve the checkpoint itself"
            )
            return
        from dfdetect.runtime.detector import Detector, shipped_name

        if not ckpt.is_file() and shipped_name(ckpt) is None:
            log.error("explanations: the PyTorch weights %s are missing", ckpt)
            self.unavailable = f"explanations unavailable: the served model's PyTorch weights ({ckpt.name}) are missing"
            return
        try:
            self._detector = Detector.load(ckpt, device=self.device, backend="torch")
        except Exception as e:  # a broken checkpoint: say so on every /explain, keep serving /predict
            log.exception("cannot load %s for explanations", ckpt)
            self.unavailable = f"explanations unavailable: cannot load the PyTorch model {ckpt.name} ({describe(e)})"
            return
        refusal = importlib.import_module("dfdetect.analysis.explain").explain_refusal(self._detector)
        if refusal is not None:
            self.unavailable = refusal
            return
        log.info("loaded %s for explanations (%s)", self._detector.model_id, ckpt)

    def run(self, img: Image.Image) -> tuple[Any, Any]:
        """(explanation, torch detector); raises LookupError(message) when unavailable."""
        with self._lock:
            self._ensure()
            if self.unavailable:
                raise LookupError(self.unavailable)
            return self._explain(self._detector, img), self._detector

    def run_faces(
        self, img: Image.Image, align: bool = True, threshold: float | None = None
    ) -> tuple[Any, Any, Image.Image, Image.Image, Any]:
        """Face mode: (``FaceResult``, explanation of the deciding face's crop (of the whole image when no face
        was found), that crop, the overview with the boxes drawn, torch detector); LookupError when unavailable.
        Only the deciding face is explained: the answer carries one panel."""
        from dfdetect.faces import draw_faces
        from dfdetect.runtime.pipeline import predict_faces

        with self._lock:
            self._ensure()
            if self.unavailable:
                raise LookupError(self.unavailable)
            r = predict_faces(self._detector, img, threshold=threshold, align=align)
            target = r.crops[r.decided] if r.faces and r.decided is not None else img
            return r, self._explain(self._detector, target), target, draw_faces(img, r), self._detector
