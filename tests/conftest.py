"""Shared fixtures: a small real/fake folder (from ../shared's subset when present) and one tiny trained run."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces140k-subset"


def make_folder(root: Path, per_class: int = 12, size: int = 64, bad: bool = False) -> Path:
    """ROOT/{real,fake} with small JPEGs: real faces from the shared subset when available, else synthetic
    images whose classes differ in texture (smooth vs noisy) so a tiny model can learn something."""
    rng = np.random.default_rng(0)
    for cls in ("real", "fake"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        src = sorted((SHARED / cls).glob("*.jpg"))[:per_class] if SHARED.is_dir() else []
        for i in range(per_class):
            if src:
                img = Image.open(src[i]).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
            else:
                base = rng.integers(60, 200, (size, size, 3)).astype(np.float32)
                if cls == "real":
                    base = np.full_like(base, base.mean()) + rng.normal(0, 5, base.shape)
                img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
            img.save(root / cls / f"{cls}_{i:03d}.jpg", quality=92)
    if bad:
        (root / "fake" / "empty.jpg").write_bytes(b"")
        (root / "real" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        (root / "real" / "notes.png").write_text("not an image at all")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data"), per_class=12, bad=True)


def tiny_config(data: Path, out: Path, **over):
    from dfdetect.core.config import TrainConfig

    cfg = TrainConfig()
    cfg.data.root = str(data)
    cfg.data.num_workers = 0
    cfg.data.val_fraction = 0.25
    cfg.data.test_fraction = 0.25
    cfg.model.name = "tiny_efficientnet"
    cfg.model.img_size = 48
    cfg.model.resize_to = 48
    cfg.epochs = 2
    cfg.warmup_epochs = 1
    cfg.batch_size = 8
    cfg.out = str(out)
    cfg.name = "run"
    cfg.device = "cpu"
    cfg.bootstrap = 50
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """One finished tiny training run (shared by the CLI, evaluate, predict and export tests)."""
    from dfdetect.engine.train import fit

    return fit(tiny_config(tiny_data, tmp_path_factory.mktemp("runs")))


@pytest.fixture()
def clean_copy(tmp_path):
    def _copy(src: Path) -> Path:
        dst = tmp_path / src.name
        shutil.copytree(src, dst)
        return dst

    return _copy
