"""Plain-dict checkpoints: atomic writes, and loads that work with ``torch.load(weights_only=True)``.

A checkpoint holds only str/int/float/bool/list/dict/None and tensors: the state dict, the arch name,
the classes, the data config (preprocessing), the resolved training config and the decision threshold.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfdetect.core.errors import DfdetectError

if TYPE_CHECKING:
    import torch

FORMAT = "dfdetect-checkpoint"
REQUIRED = ("arch", "classes", "data_config", "model")


class CheckpointError(DfdetectError, ValueError):
    """A checkpoint or model file is missing, truncated, foreign or incomplete."""


def save_checkpoint(obj: dict[str, Any], path: str | Path) -> Path:
    """Write to a temp file in the same folder, fsync, then rename: a kill never leaves a torn file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **obj}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    if path.suffix == ".onnx":
        raise CheckpointError(f"{path} is an exported ONNX model; this needs a .pt or .safetensors checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): truncated or not a checkpoint")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    with open(path, "rb") as f:
        head = f.read(2)
    if head not in (b"PK", b"\x80\x02"):
        # torch.save writes a zip archive (a legacy pickle before torch 1.6); on anything else torch.load's error
        # is a bare unpickler key such as "101" (the byte 'e'), which tells a user nothing.
        raise CheckpointError(
            f"{path} is not a dfdetect checkpoint: not a file written by torch.save (expected a .pt from "
            "`dfdetect train`, a .safetensors, or an exported .onnx)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file gets one message naming it
        raise CheckpointError(
            f"{path} is truncated or not a dfdetect checkpoint ({type(e).__name__}: {first_line(e)})"
        ) from e
    missing = [k for k in REQUIRED if k not in ckpt]
    if ckpt.get("format") != FORMAT or missing:
        raise CheckpointError(f"{path} is not a dfdetect checkpoint (missing {missing or 'format tag'})")
    return ckpt


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line and sentence (libraries' load errors run to many lines)."""
    lines = str(e).strip().splitlines()
    return (lines[0].split(". ")[0] if lines else type(e).__name__)[:300]


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header, after checking that the file is as long as it says: a safetensors file is an 8-byte
    little-endian header length, the JSON header, then the tensor bytes it indexes (``data_offsets``)."""
    import json

    size = path.stat().st_size
    not_st = f"{path}: truncated or not a safetensors file"
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or 8 + n > size or n > 100_000_000:
            raise CheckpointError(f"{not_st} ({size} bytes; the header length field says {max(n, 0)})")
        try:
            header = json.loads(f.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            raise CheckpointError(f"{not_st} (unreadable header: {first_line(e)})") from e
    need = 8 + n + max(ends, default=0)
    if size < need:
        raise CheckpointError(f"{path} is truncated: {size} bytes, its header indexes {need}")
    return header


def _load_safetensors(path: Path) -> dict[str, Any]:
    """Shipped weights: tensors in safetensors, everything else as JSON in its metadata."""
    import json

    from safetensors import SafetensorError, safe_open

    raw = (_safetensors_header(path).get("__metadata__") or {}).get("dfdetect")
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file without dfdetect metadata (not a dfdetect model)")
    try:
        meta = json.loads(raw)
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or not a dfdetect safetensors file ({first_line(e)})") from e
    missing = [k for k in REQUIRED if k != "model" and k not in meta] if isinstance(meta, dict) else list(REQUIRED)
    if missing:
        raise CheckpointError(f"{path} is not a dfdetect model (its metadata lacks {missing})")
    return {"format": FORMAT, **meta, "model": state}


def save_safetensors(ckpt: dict[str, Any], path: str | Path, half: bool = False) -> Path:
    """Export a checkpoint's weights (in their own dtype; fp16 with ``half``) plus its metadata as one .safetensors
    file. Not fp16 by default: a calibrated copy of an fp32 model must score like it, with only T and threshold new."""
    import json

    from safetensors.torch import save_file

    meta = {k: v for k, v in ckpt.items() if k not in ("model", "format", "optimizer", "scheduler", "rng")}
    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in ckpt["model"].items()
        if not k.endswith("num_batches_tracked")
    }
    path = Path(path)
    save_file(state, str(path), metadata={"dfdetect": json.dumps(meta)})
    return path


def model_id_for(ckpt: dict[str, Any], weights_path: Path) -> str:
    """The id a model is known by: the shipped/recorded ``model_id``, else arch + the weights file's hash."""
    from dfdetect.data.io import sha256_file

    return ckpt.get("model_id") or f"{ckpt['arch']}-{sha256_file(weights_path)[:12]}"
