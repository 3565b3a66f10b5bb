"""DDP on CPU: `dfdetect train --nproc 2` (torchrun, gloo) against a single process with the same global batch.

What is compared, and why it is a real check: the head-only warm-up epoch. There the backbone's BatchNorm
layers run in eval mode (frozen ImageNet statistics), so a sample's forward pass does not depend on which
other samples share its batch, and 2 ranks x 4 images must give the same update as 1 process x 8 images:
same global batches (DistributedSampler with the single-process seed scheme), gradients averaged over the
global batch by DDP (including the uneven shards left by unreadable files), validation and test metrics
gathered from both ranks' shards. Augmentation and dropout are off because their random draws are per rank.
(Fine-tuning with BatchNorm in train mode normalises with per-rank batch statistics, so it legitimately
differs from one process; SyncBatchNorm (--sync-bn) is CUDA-only. The slow test checks fine-tuning + resume
DDP against DDP instead.)
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dfdetect.data.datasets import read_manifest
from dfdetect.engine.distributed import strip_nproc
from dfdetect.engine.train import fit
from dfdetect.models.checkpoint import load_checkpoint, save_checkpoint
from dfdetect.models.factory import create_model
from tests.conftest import make_folder, tiny_config

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")

COMMON = {"batch_size": 8, "epochs": 0, "warmup_epochs": 1, "early_stopping": 0}


@pytest.fixture(scope="module")
def ddp_data(tmp_path_factory) -> Path:
    root = make_folder(tmp_path_factory.mktemp("ddpdata"), per_class=12)
    (root / "fake" / "empty.jpg").write_bytes(b"")  # unreadable files make the ranks' shards uneven
    (root / "real" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def _config(data: Path, out: Path, name: str, **over):
    cfg = tiny_config(data, out, name=name, **{**COMMON, **over})
    cfg.model.drop_rate = 0.0
    cfg.augment.rotation = cfg.augment.scale = cfg.augment.hflip = 0.0
    cfg.amp = False  # fp32: bf16 rounding differs with the batch split, and these tests compare weights to 1e-5
    return cfg


def _cli_args(data: Path, out: Path, name: str, epochs: int = 0) -> list[str]:
    return [
        *("--data", str(data), "--model", "tiny_efficientnet", "--img-size", "48", "--resize", "48"),
        *("--val-fraction", "0.25", "--test-fraction", "0.25", "--workers", "0", "--device", "cpu"),
        *("--epochs", str(epochs), "--warmup-epochs", "1", "--batch-size", "8", "--early-stopping", "0"),
        *("--drop-rate", "0", "--rotation", "0", "--scale", "0", "--hflip", "0", "--no-amp"),
        *("--out", str(out), "--name", name),
    ]


def _run_cli(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run(
        [sys.executable, "-m", "dfdetect", "train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(run / "history.csv")))


def _files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


def test_strip_nproc():
    assert strip_nproc(["--nproc", "2", "--data", "x", "--nproc=4", "-b", "8"]) == ["--data", "x", "-b", "8"]


def test_two_rank_warmup_matches_single_process(ddp_data, tmp_path):
    single = fit(_config(ddp_data, tmp_path, "single"))
    train = [it for it in read_manifest(single / "split.csv") if it.split == "train"]
    assert len(train) % 2 == 0  # no DistributedSampler padding, so both runs see exactly the same images

    proc = _run_cli(["--nproc", "2", *_cli_args(ddp_data, tmp_path, "ddp")])
    ddp = tmp_path / "ddp"

    # Only rank 0 wrote: the same files as a single-process run, no leftovers (temp files, duplicates),
    # and one log line per epoch (rank 1 logs warnings only).
    assert _files(ddp) == _files(single)
    assert proc.stderr.count("DDP: 2 ranks (gloo), global batch 8 = 4 per rank") == 1
    assert sum(line.startswith("epoch   1 [warmup") for line in proc.stderr.splitlines()) == 1
    assert json.loads((ddp / "summary.json").read_text())["world_size"] == 2

    # Same weights after the epoch (and the same optimizer moments).
    a, b = load_checkpoint(single / "last.pt"), load_checkpoint(ddp / "last.pt")
    assert a["split_sha256"] == b["split_sha256"]
    for k, va in a["model"].items():
        torch.testing.assert_close(b["model"][k], va, rtol=1e-4, atol=1e-5, msg=k)
    head = [k for k in a["model"] if k.startswith("classifier")]
    torch.manual_seed(0)  # fit seeds the initial weights the same way
    init = create_model("tiny_efficientnet", weights="none", drop_rate=0.0).state_dict()
    assert any(not torch.allclose(a["model"][k], init[k]) for k in head)  # the head did train

    # Same train/validation metrics, computed from every image (validation gathered from both ranks' shards).
    ra, rb = _rows(single), _rows(ddp)
    assert len(ra) == len(rb) == 1
    for key in ("train_loss", "train_acc", "valid_loss", "valid_acc", "valid_f1", "valid_auc", "next_lr"):
        assert float(rb[0][key]) == pytest.approx(float(ra[0][key]), rel=1e-4, abs=1e-6), key
    sa, sb = load_checkpoint(single / "best.pt")["valid_scores"], load_checkpoint(ddp / "best.pt")["valid_scores"]
    assert sa["labels"] == sb["labels"]
    np.testing.assert_allclose(sb["scores"], sa["scores"], rtol=1e-4, atol=1e-6)

    # Same test evaluation (sharded, gathered, written once) and the same skipped files.
    ma = json.loads((single / "eval_test" / "metrics.json").read_text())
    mb = json.loads((ddp / "eval_test" / "metrics.json").read_text())
    assert mb["n"] == ma["n"] > 0
    for key in ("accuracy", "f1", "roc_auc", "eer"):
        assert mb[key] == pytest.approx(ma[key], abs=1e-6), key
    assert (ddp / "bad_files.txt").read_text() == (single / "bad_files.txt").read_text() != ""


@pytest.mark.slow
def test_two_rank_finetune_and_resume_are_exact(ddp_data, tmp_path):
    """Warm-up + one fine-tuning epoch under DDP, against the same run stopped after epoch 1 and resumed."""
    _run_cli(["--nproc", "2", *_cli_args(ddp_data, tmp_path, "full", epochs=1)])
    _run_cli(["--nproc", "2", *_cli_args(ddp_data, tmp_path, "cut", epochs=0)])
    cut = tmp_path / "cut"
    # The 1-epoch run's last.pt is the 2-epoch run's state after epoch 1: give it the longer schedule, resume.
    state = load_checkpoint(cut / "last.pt")
    state["config"]["epochs"] = 1
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, cut / "last.pt")
    shutil.rmtree(cut / "eval_test")
    _run_cli(["--nproc", "2", "--resume", str(cut)])
    ra, rb = _rows(tmp_path / "full"), _rows(cut)
    assert [r["phase"] for r in rb] == ["warmup", "finetune"]
    drop = {"seconds", "images_per_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in ra] == [
        {k: v for k, v in r.items() if k not in drop} for r in rb
    ]
    wa, wb = load_checkpoint(tmp_path / "full" / "last.pt")["model"], load_checkpoint(cut / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_image_cache_matches_decoding(ddp_data, tmp_path):
    """The memory-mapped cache is built once, reused, and gives the same validation scores as decoding."""
    from dfdetect.data.cache import CachedImageDataset, build_cache, cache_paths
    from dfdetect.data.datasets import ImageDataset
    from dfdetect.data.transforms import eval_transform

    items = read_manifest(fit(_config(ddp_data, tmp_path, "plain")) / "split.csv")
    npy = build_cache(items, ddp_data, tmp_path / "cache", 48)
    assert npy == cache_paths(tmp_path / "cache", 48)[0] and np.load(npy, mmap_mode="r").shape[1:] == (48, 48, 3)
    mtime = npy.stat().st_mtime_ns
    assert build_cache(items[:5], ddp_data, tmp_path / "cache", 48).stat().st_mtime_ns == mtime  # reused
    dc = {"input_size": [3, 48, 48], "resize": 48, "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3}
    plain = ImageDataset(items, ddp_data, eval_transform(dc))
    cached = CachedImageDataset(items, ddp_data, eval_transform(dc), tmp_path / "cache", 48)
    for i in range(len(items)):
        x, y = plain[i], cached[i]
        assert (x[0] is None) == (y[0] is None) and x[1:] == y[1:]
        if x[0] is not None:
            torch.testing.assert_close(x[0], y[0])

    cfg = _config(ddp_data, tmp_path, "cached")
    cfg.data.cache_dir = str(tmp_path / "cache")
    cfg.data.manifest = str(tmp_path / "plain" / "split.csv")
    run = fit(cfg)
    # Training inputs differ slightly (the cache resized with PIL, the plain path resizes in torchvision after
    # augmentation), so the run is close to the plain one, not bit-equal.
    ra, rb = _rows(tmp_path / "plain"), _rows(run)
    assert float(rb[0]["valid_loss"]) == pytest.approx(float(ra[0]["valid_loss"]), rel=0.05)
    assert (run / "bad_files.txt").read_text().count("\n") == 2
