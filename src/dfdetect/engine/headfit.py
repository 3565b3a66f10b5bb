"""Train only the head of a frozen-backbone model from cached features (the fast CPU path for head variants).

With a frozen backbone, ``dfdetect train --freeze-backbone`` runs the backbone forward on every image in every
epoch. This module runs it ONCE per image (train, valid), caches what the head reads, and trains the head on
the cache for many epochs in seconds. The result is an ordinary checkpoint (``arch``, ``config.model.head``,
``data_config``, threshold chosen on validation, ``valid_scores``, ``split_sha256``), usable by ``evaluate``,
``predict``, ``explain``, ``ensemble`` and ``compare`` like any other.

Differences from ``fit``: no augmentation (features of the evaluation preprocessing are cached), BN statistics
are the backbone's own (as in ``fit``'s frozen phase), the best epoch is chosen by validation AUC.

Cached per image:
- ``attention`` / ``attnpool`` heads: the last feature map (fp16);
- ``multiscale``: the average-pooled maps of ``feature_info[-3:-1]`` and of the last map (all the head reads);
- fusion models: the concatenated pooled member embeddings (``FusionModel.forward_features``).

    python -m dfdetect.engine.headfit --model efficientnet_lite0 --head attention --weights lite0.safetensors \
        --img-size 320 --data DATA --manifest split.csv --out runs/x/   # writes runs/x/attention.pt
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


def _head_inputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """What the model's head reads for input ``x``: [last map (fp16), pooled tapped maps...] or [embedding]."""
    from dfdetect.models.fusion import FusionModel
    from dfdetect.models.heads import HeadedModel

    if isinstance(model, FusionModel):
        return [model.forward_features(x)]
    if isinstance(model, HeadedModel):
        feats = model.forward_features(x)
        taps = [model._tapped.pop(n).mean((2, 3)) for n in model._taps]
        return [feats.half(), *taps]
    raise TypeError(
        f"head-only training from cached features needs a head variant or a fusion model, not {type(model)}"
    )


def _head_forward(model: nn.Module, cached: list[torch.Tensor]) -> torch.Tensor:
    from dfdetect.models.heads import HeadedModel

    if isinstance(model, HeadedModel) and model._taps:
        # MultiScaleHead average-pools its maps: pooled (N, C) maps are given as (N, C, 1, 1).
        pooled = [c[:, :, None, None] for c in cached[1:]] + [cached[0].float().mean((2, 3), keepdim=True)]
        return model.head(pooled)
    return model.get_classifier()(cached[0].float())


@torch.inference_mode()
def cache_features(
    model: nn.Module, items: list[Any], root: Path, data_config: dict[str, Any], batch_size: int, workers: int
) -> tuple[list[torch.Tensor], np.ndarray]:
    """Run the frozen part once over ``items``: (cached head inputs, labels)."""
    from dfdetect.data.datasets import ImageDataset, make_loader
    from dfdetect.data.transforms import eval_transform

    model.eval()
    ds = ImageDataset(items, root, eval_transform(data_config))
    parts: list[list[torch.Tensor]] = []
    labels = []
    t0, n = time.perf_counter(), 0
    for images, y, _idx, _bad in make_loader(ds, batch_size, False, workers):
        if images is None:
            continue
        parts.append(_head_inputs(model, images))
        labels.append(y)
        n += len(y)
    log.info("cached %d images in %.0f s (%.1f images/s)", n, time.perf_counter() - t0, n / (time.perf_counter() - t0))
    return [torch.cat(p) for p in zip(*parts)], torch.cat(labels).numpy()


def train_head(
    model: nn.Module,
    train: tuple[list[torch.Tensor], np.ndarray],
    valid: tuple[list[torch.Tensor], np.ndarray],
    epochs: int = 20,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]], np.ndarray]:
    """AdamW on the head only; returns (best head state by validation AUC, history, best validation scores)."""
    from dfdetect.core.metrics import compute_metrics

    torch.manual_seed(seed)
    head = model.get_classifier()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    xs, y = train
    yt = torch.as_tensor(y, dtype=torch.long)
    loss_fn = nn.CrossEntropyLoss()
    best: tuple[float, float] = (-1.0, math.inf)
    best_state, best_scores, history = None, None, []
    for epoch in range(1, epochs + 1):
        head.train()
        order = torch.randperm(len(yt))
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            loss = loss_fn(_head_forward(model, [x[idx] for x in xs]).float(), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        head.eval()
        with torch.inference_mode():
            logits = _head_forward(model, valid[0]).float()
            vloss = float(nn.functional.cross_entropy(logits, torch.as_tensor(valid[1], dtype=torch.long)))
            scores = torch.softmax(logits, 1)[:, 1].numpy()
        m = compute_metrics(valid[1], scores, 0.5)
        row = {"epoch": epoch, "train_loss": total / len(yt), "valid_loss": vloss, "valid_auc": m["roc_auc"]}
        row["valid_acc"] = m["accuracy"]
        history.append(row)
        log.info(
            "epoch %2d train_loss %.4f | valid_loss %.4f valid_acc %.4f valid_auc %.4f",
            epoch,
            row["train_loss"],
            vloss,
            m["accuracy"],
            m["roc_auc"],
        )
        if (m["roc_auc"], -vloss) > (best[0], -best[1]):
            best = (m["roc_auc"], vloss)
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
            best_scores = scores
    assert best_state is not None and best_scores is not None
    head.load_state_dict(best_state)
    return best_state, history, best_scores


def fit_head_cached(
    model_name: str,
    weights: str,
    data: str | Path,
    manifest: str | Path,
    out_dir: str | Path,
    heads: list[str] | tuple[str, ...] = ("linear",),
    img_size: int | None = None,
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 32,
    workers: int = 1,
    threshold: str = "0.5",
    seed: int = 0,
    train_per_class: int | None = None,
) -> list[Path]:
    """Build one model per head on the frozen backbone from ``weights``, cache features ONCE (shared by all heads,
    one backbone pass per image), train each head, save ``out_dir/{head}.pt`` (fusion: ``out_dir/fusion.pt``)."""
    from dfdetect.data.datasets import limit_per_class, read_manifest
    from dfdetect.models.factory import create_model, data_config_for
    from dfdetect.models.registry import is_fusion

    fusion = is_fusion(model_name)
    heads = ["linear"] if fusion else list(heads)
    models = []
    for h in heads:
        torch.manual_seed(seed)
        models.append(create_model(model_name, weights, drop_rate=0.2, head=h))
    data_config = data_config_for(models[0], None if fusion else img_size, None)
    # One cache for all heads: made by a model that also taps the multi-scale stages when one wants them.
    cacher = next((m for m in models if getattr(m, "_taps", None)), models[0])
    items = read_manifest(manifest)
    by = {s: [it for it in items if it.split == s] for s in ("train", "valid")}
    if train_per_class:  # a CPU budget: fewer training images (validation stays whole)
        by["train"] = limit_per_class(by["train"], train_per_class)
        log.info("training on %d images (%d per class)", len(by["train"]), train_per_class)
    root = Path(data)
    train = cache_features(cacher, by["train"], root, data_config, batch_size, workers)
    valid = cache_features(cacher, by["valid"], root, data_config, batch_size, workers)
    if cacher is not models[0] or len(models) > 1:
        # The backbones are identical copies: every model reads the same cache (and keeps the same backbone).
        state = {k: v for k, v in cacher.state_dict().items() if not k.startswith("head.")}
        for m in models:
            m.load_state_dict(state, strict=False)
    paths = []
    out_dir = Path(out_dir)
    for h, model in zip(heads, models):
        log.info("training head %s of %s", h, model_name)
        paths.append(
            _train_and_save(
                model,
                model_name,
                weights,
                h,
                data,
                manifest,
                data_config,
                train,
                valid,
                img_size,
                epochs,
                lr,
                batch_size,
                threshold,
                seed,
                out_dir / f"{'fusion' if fusion else h}.pt",
            )  # fmt: skip
        )
    return paths


def _train_and_save(
    model: nn.Module,
    model_name: str,
    weights: str,
    head: str,
    data: str | Path,
    manifest: str | Path,
    data_config: dict[str, Any],
    train: tuple[list[torch.Tensor], np.ndarray],
    valid: tuple[list[torch.Tensor], np.ndarray],
    img_size: int | None,
    epochs: int,
    lr: float,
    batch_size: int,
    threshold: str,
    seed: int,
    out: Path,
) -> Path:
    from dfdetect.core.config import TrainConfig
    from dfdetect.core.metrics import choose_threshold
    from dfdetect.core.version import __version__
    from dfdetect.data.datasets import manifest_hash
    from dfdetect.models.checkpoint import save_checkpoint
    from dfdetect.models.factory import CLASSES
    from dfdetect.models.registry import get_spec

    _, history, vscores = train_head(model, train, valid, epochs, lr, batch_size=batch_size, seed=seed)
    best = max(history, key=lambda r: (r["valid_auc"], -r["valid_loss"]))
    cfg = TrainConfig()
    cfg.data.root, cfg.data.manifest = str(data), str(manifest)
    cfg.model.name, cfg.model.weights, cfg.model.head = model_name, weights, head
    cfg.model.img_size, cfg.model.freeze_backbone = img_size, True
    cfg.warmup_epochs, cfg.epochs, cfg.head_lr, cfg.batch_size = epochs, 0, lr, batch_size
    cfg.threshold, cfg.seed = threshold, seed
    ckpt = {
        "arch": model_name,
        "timm_name": get_spec(model_name).timm_name,
        "classes": list(CLASSES),
        "data_config": data_config,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": cfg.to_dict(),
        "epoch": best["epoch"],
        "valid": {"valid_loss": best["valid_loss"], "valid_acc": best["valid_acc"], "valid_auc": best["valid_auc"]},
        "split_sha256": manifest_hash(manifest),
        "dfdetect_version": __version__,
        "threshold": float(choose_threshold(valid[1], vscores, threshold)),
        "threshold_rule": f"{threshold} (chosen on the validation split)",
        "valid_scores": {"labels": [int(v) for v in valid[1]], "scores": [float(v) for v in vscores]},
        "trained_by": "dfdetect.engine.headfit: frozen backbone, head trained on cached features, no augmentation",
        "history": history,
    }
    save_checkpoint(ckpt, out)
    log.info("wrote %s (best epoch %d, valid AUC %.4f)", out, best["epoch"], best["valid_auc"])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m dfdetect.engine.headfit", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="backbone name or fusion:A+B")
    p.add_argument("--head", default="linear", help="comma-separated: attention,attnpool,multiscale (backbones)")
    p.add_argument("--weights", required=True, help="checkpoint of the backbone (fusion: one per member, a,b)")
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--data", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="folder for the checkpoints: HEAD.pt (fusion: fusion.pt)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threshold", default="0.5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-per-class", type=int, default=None, help="use at most N training images per class")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    fit_head_cached(
        a.model, a.weights, a.data, a.manifest, a.out, a.head.split(","), a.img_size, a.epochs, a.lr, a.batch_size,
        a.workers, a.threshold, a.seed, a.train_per_class,
    )  # fmt: skip


if __name__ == "__main__":
    main()
