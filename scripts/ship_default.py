"""Package a trained checkpoint as a shipped detector (src/dfdetect/weights/): ``default`` or ``large``.

Writes NAME.safetensors (fp16 weights + metadata), NAME.onnx (for the fast CPU path), split.csv
(the manifest it was trained/validated/tested on, unless one ships already: then it must be the same split);
picks the decision threshold on the VALIDATION scores stored in the checkpoint; checks fp16 vs fp32 scores
agree within 1e-3 on 40 test images, else stores fp32.
    python scripts/ship_default.py CKPT --manifest src/dfdetect/weights/split.csv --data ../shared/data
    python scripts/ship_default.py CKPT --name large ...   # the 320 px model (`--model large`)
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from dfdetect.core.metrics import choose_threshold
from dfdetect.data.datasets import manifest_hash
from dfdetect.data.io import open_image
from dfdetect.models.checkpoint import load_checkpoint, save_safetensors
from dfdetect.models.factory import create_model
from dfdetect.runtime.detector import Detector, TorchBackend
from dfdetect.runtime.export import export_onnx

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "dfdetect" / "weights"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--threshold", default="eer", help="rule on validation scores: eer | f1 | fpr1 | number")
    ap.add_argument("--version", default="v1")
    ap.add_argument("--name", default="default", choices=["default", "large"], help="which shipped model to write")
    a = ap.parse_args()
    ckpt = load_checkpoint(a.checkpoint)
    vs = ckpt.get("valid_scores")
    if vs is None:
        raise SystemExit("checkpoint has no stored validation scores; cannot pick a threshold honestly")
    ckpt["threshold"] = choose_threshold(vs["labels"], vs["scores"], a.threshold)
    ckpt["threshold_rule"] = f"{a.threshold} on the validation split ({len(vs['labels'])} images)"
    digest = hashlib.sha256(b"".join(v.numpy().tobytes() for v in ckpt["model"].values())).hexdigest()[:10]
    ckpt["model_id"] = f"dfdetect-{a.name}-{a.version}-{ckpt['arch']}-{digest}"
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    from dfdetect.data.datasets import read_manifest

    rows = read_manifest(a.manifest)
    shipped_manifest = WEIGHTS / "split.csv"
    if shipped_manifest.is_file():
        # the shipped models share one split: compare what the split is (path, label, split), not extra columns
        same = [(r.path, r.label, r.split) for r in read_manifest(shipped_manifest)]
        if same != [(r.path, r.label, r.split) for r in rows]:
            raise SystemExit("the shipped models share one split: this checkpoint's manifest differs from split.csv")
    else:
        lines = [x for x in a.manifest.read_text().splitlines() if not x.startswith("#")]
        shipped_manifest.write_text("\n".join([f"# root: {a.data}", *lines]) + "\n")  # relative to the repo root
    ckpt["split_sha256"] = manifest_hash(shipped_manifest)
    out = save_safetensors(ckpt, WEIGHTS / f"{a.name}.safetensors", half=True)
    # fp16 storage must not change verdicts: compare against the fp32 checkpoint on real files.
    fp32 = create_model(ckpt["arch"], drop_rate=0.0)
    fp32.load_state_dict(ckpt["model"], strict=False)
    ref = Detector(TorchBackend(fp32, "cpu"), ckpt["data_config"], ckpt["threshold"])
    shipped = Detector.load(out, device="cpu", backend="torch")
    test = [a.data / r.path for r in rows if r.split == "test"]
    files = test[:: max(1, len(test) // 40)][:40]
    diffs = [abs(ref.score_image(open_image(f)) - shipped.score_image(open_image(f))) for f in files]
    print(f"fp16 vs fp32 max |P(fake) diff| over {len(files)} images: {max(diffs):.2e}")
    if max(diffs) >= 1e-3:  # the bound for fp16 storage: keep fp32 rather than move scores
        print("fp16 storage moves scores by >= 1e-3: storing fp32")
        out = save_safetensors(ckpt, WEIGHTS / f"{a.name}.safetensors", half=False)
        shipped = Detector.load(out, device="cpu", backend="torch")
        diffs = [abs(ref.score_image(open_image(f)) - shipped.score_image(open_image(f))) for f in files]
        assert max(diffs) < 1e-5, max(diffs)
    res = export_onnx(out, WEIGHTS / f"{a.name}.onnx")
    print(f"onnx max |logit diff| vs torch: {res['max_abs_diff']:.2e}")
    print(
        json.dumps(
            {k: ckpt[k] for k in ("model_id", "threshold", "threshold_rule", "split_sha256", "data_config")}, indent=2
        )
    )
    mb = 2**20
    onnx_mb = (WEIGHTS / f"{a.name}.onnx").stat().st_size / mb
    print(f"size: {out.stat().st_size / mb:.1f} MB safetensors, {onnx_mb:.1f} MB onnx")


if __name__ == "__main__":
    main()
