"""Export a checkpoint to ONNX with its preprocessing and threshold in the model's metadata.

The exported graph maps a normalised (N, 3, H, W) float32 batch to 2-way logits (real, fake);
``metadata_props["dfdetect"]`` holds arch, classes, data_config, threshold and model id as JSON,
so ``Detector.load("model.onnx")`` needs nothing else. Parity with PyTorch is checked on export.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dfdetect.core.errors import DfdetectError

log = logging.getLogger(__name__)


class ExportError(DfdetectError, RuntimeError):
    """This checkpoint cannot be exported (an ensemble), or the exported graph disagrees with PyTorch."""


def export_onnx(
    checkpoint: str | Path, out: str | Path, opset: int = 17, check: bool = True, atol: float = 1e-4
) -> dict[str, Any]:
    """Write ``out`` (.onnx, one file) and return {path, max_abs_diff, metadata}."""
    import numpy as np
    import onnx
    import torch

    from dfdetect.core.version import __version__
    from dfdetect.models.checkpoint import load_checkpoint, model_id_for
    from dfdetect.models.factory import model_from_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") == "ensemble":
        # Members have different input sizes and preprocessing: one ONNX graph with one input cannot hold them.
        raise ExportError(
            f"{checkpoint} is an ensemble; export each member checkpoint instead (its members: "
            f"{', '.join(str(m.get('path', m.get('arch', '?'))) for m in ckpt.get('members', []))})"
        )
    model = model_from_checkpoint(ckpt)
    model.eval()
    size = int(ckpt["data_config"]["input_size"][-1])
    dummy = torch.randn(2, 3, size, size)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The TorchScript-based exporter writes one self-contained file and needs no onnxscript.
    torch.onnx.export(
        model,
        (dummy,),
        str(out),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=opset,
        dynamo=False,
    )
    meta = {
        "arch": ckpt["arch"],
        "classes": list(ckpt.get("classes", ["real", "fake"])),
        "data_config": ckpt["data_config"],
        "threshold": float(ckpt.get("threshold", 0.5)),
        "temperature": float(ckpt.get("temperature", 1.0)),
        "model_id": model_id_for(ckpt, checkpoint),
        "dfdetect_version": __version__,
        "output": "logits (real, fake); P(fake) = softmax(logits)[:, 1]",
    }
    proto = onnx.load(str(out))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "dfdetect", json.dumps(meta)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    result: dict[str, Any] = {"path": str(out), "metadata": meta}
    if check:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        x = torch.randn(3, 3, size, size)
        with torch.inference_mode():
            ref = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        diff = float(np.abs(ref - got).max())
        result["max_abs_diff"] = diff
        if diff > atol:
            raise ExportError(f"ONNX export differs from PyTorch by {diff:.2e} (> {atol:.0e})")
        log.debug("exported %s (max |logit diff| vs PyTorch %.2e)", out, diff)  # the CLI prints the result
    return result
