"""The Python API for scoring images: ``Detector.load().predict(paths)`` -> list of ``Prediction``.

Preprocessing always comes from the checkpoint's stored data config, never from ImageNet defaults.
The same ``Prediction`` shape is used by the CLI (table, JSON lines, CSV) and the REST API.
"""

from __future__ import annotations

import glob
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dfdetect.data.io import ImageLoadError, is_image_file, open_image

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "default.safetensors"


@dataclass
class Prediction:
    path: str
    sha256: str | None
    label: str | None
    """'fake' or 'real' (None when the file could not be read)."""
    score: float | None
    """P(fake) in [0, 1]."""
    threshold: float
    model: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expand_paths(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Files, folders (recursive, image extensions only) and globs -> (files, inputs that matched nothing)."""
    files: list[Path] = []
    missing: list[str] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file() and is_image_file(q)))
        elif p.exists():
            files.append(p)
        elif any(ch in str(raw) for ch in "*?["):
            hits = sorted(Path(h) for h in glob.glob(str(raw), recursive=True) if Path(h).is_file())
            if hits:
                files.extend(hits)
            else:
                missing.append(str(raw))
        else:
            missing.append(str(raw))
    return files, missing


class _FileDataset(Dataset):
    """Reads each file once: hash and decode from the same bytes, in a DataLoader worker."""

    def __init__(self, paths: Sequence[Path], transform):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            data = self.paths[i].read_bytes()
        except OSError as e:
            return None, i, None, f"{self.paths[i]}: cannot read ({e.strerror})"
        sha = hashlib.sha256(data).hexdigest()
        try:
            img = open_image(data)
        except ImageLoadError as e:
            return None, i, sha, str(e).replace("<bytes>", str(self.paths[i]))
        return self.transform(img), i, sha, None


def _collate(batch):
    good = [b for b in batch if b[0] is not None]
    images = torch.stack([b[0] for b in good]) if good else None
    return images, [b[1] for b in good], [(b[1], b[2], b[3]) for b in batch]


class Detector:
    """A loaded detector: model + its preprocessing + its decision threshold."""

    def __init__(
        self,
        model: nn.Module,
        data_config: dict[str, Any],
        threshold: float = 0.5,
        model_id: str = "unknown",
        arch: str = "unknown",
        device: str | torch.device = "cpu",
        meta: dict[str, Any] | None = None,
    ):
        from dfdetect.data.transforms import eval_transform

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.data_config = data_config
        self.threshold = float(threshold)
        self.model_id = model_id
        self.arch = arch
        self.meta = meta or {}
        self.transform = eval_transform(data_config)

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "auto") -> Detector:
        """Load a checkpoint from ``dfdetect train`` (.pt) or shipped weights (.safetensors); default: the shipped model."""
        from dfdetect.engine.checkpoint import load_checkpoint
        from dfdetect.engine.evaluate import resolve_device
        from dfdetect.models.factory import create_model

        path = Path(path) if path else DEFAULT_WEIGHTS
        if path == DEFAULT_WEIGHTS and not path.is_file():
            raise FileNotFoundError(f"the default detector {path} is missing from this installation")
        ckpt = load_checkpoint(path)
        model = create_model(ckpt["arch"], drop_rate=0.0)
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not fit {ckpt['arch']} (missing {missing[:3]}, extra {unexpected[:3]})")
        model_id = ckpt.get("model_id") or f"{ckpt['arch']}-{_file_digest(path)[:12]}"
        return cls(
            model, ckpt["data_config"], ckpt.get("threshold", 0.5), model_id, ckpt["arch"],
            resolve_device(device), meta={k: ckpt[k] for k in ("epoch", "split_sha256", "threshold_rule") if k in ckpt},
        )

    @torch.inference_mode()
    def score_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """P(fake) for a preprocessed batch (N, 3, H, W)."""
        logits = self.model(batch.to(self.device))
        return torch.softmax(logits.float(), 1)[:, 1].cpu().numpy()

    def score_image(self, img: Image.Image) -> float:
        """P(fake) for one decoded image (any mode; converted to RGB here)."""
        from dfdetect.data.io import to_rgb

        return float(self.score_tensor(self.transform(to_rgb(img)).unsqueeze(0))[0])

    def predict(
        self,
        inputs: str | Path | Iterable[str | Path],
        batch_size: int = 32,
        workers: int = 1,
        threshold: float | None = None,
        progress: bool = False,
    ) -> list[Prediction]:
        """Score files, folders or globs. Unreadable files come back with ``error`` set; missing paths raise."""
        from tqdm.auto import tqdm

        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        files, missing = expand_paths(inputs)
        if missing:
            raise FileNotFoundError(f"no such file, folder or glob match: {', '.join(missing)}")
        thr = self.threshold if threshold is None else float(threshold)
        results: list[Prediction | None] = [None] * len(files)
        loader = DataLoader(
            _FileDataset(files, self.transform), batch_size=batch_size, num_workers=workers, collate_fn=_collate,
            prefetch_factor=4 if workers else None,
        )
        with tqdm(total=len(files), desc="predict", unit="img", disable=not progress) as bar:
            for images, idx, info in loader:
                scores = self.score_tensor(images) if images is not None else []
                score_of = dict(zip(idx, scores))
                for i, sha, err in info:
                    s = score_of.get(i)
                    if err:
                        log.warning("skipping %s", err)
                    results[i] = Prediction(
                        path=str(files[i]), sha256=sha,
                        label=None if s is None else ("fake" if s >= thr else "real"),
                        score=None if s is None else round(float(s), 6),
                        threshold=thr, model=self.model_id, error=err,
                    )
                bar.update(len(info))
        return [r for r in results if r is not None]


def _file_digest(path: Path) -> str:
    from dfdetect.data.io import sha256_file

    return sha256_file(path)
