"""The training loop: head-only warm-up, then fine-tuning; plateau LR, early stopping, exact resume.

A run folder holds everything the run made: config.yaml (resolved), split.csv (manifest), history.csv,
curves.png, last.pt (full state, for --resume), best.pt (slim, for inference), bad_files.txt, and
eval_test/ (metrics.json, report, figures) from the best checkpoint on the held-out test split.

Under ``torchrun`` the same loop runs DistributedDataParallel (see ``dfdetect.engine.distributed``):
``batch_size`` is the global batch, every rank validates a shard and the shards are gathered, and
only rank 0 writes the run folder.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from dfdetect.core.config import TrainConfig
from dfdetect.core.device import autocast, precision_name, to_memory_format
from dfdetect.core.metrics import choose_threshold, compute_metrics
from dfdetect.core.version import __version__
from dfdetect.data.datasets import (
    ImageDataset,
    limit_per_class,
    make_loader,
    manifest_hash,
    resolve_items,
    write_manifest,
)
from dfdetect.data.transforms import eval_transform, train_transform
from dfdetect.engine import distributed as D
from dfdetect.engine.distill import Teachers, distill_loss
from dfdetect.engine.evaluate import write_eval_artifacts
from dfdetect.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from dfdetect.models.factory import CLASSES, create_model, data_config_for, freeze_backbone, model_from_checkpoint
from dfdetect.models.registry import get_spec, is_fusion

log = logging.getLogger(__name__)

HISTORY_COLUMNS = [
    "epoch",
    "phase",
    "train_loss",
    "train_acc",
    "valid_loss",
    "valid_acc",
    "valid_f1",
    "valid_auc",
    "v_loss_improvement_pct",
    "lr",
    "next_lr",
    "seconds",
    "images_per_s",
]


def _set_bn_eval(model: nn.Module) -> None:
    # A frozen backbone keeps its ImageNet BN statistics (as Keras does with training=False).
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _optimizer(model: nn.Module, cfg: TrainConfig, phase: str) -> torch.optim.Optimizer:
    lr = cfg.head_lr if phase == "warmup" else cfg.lr
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, phase: str):
    if phase == "finetune" and cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )


def _batch_mixer(cfg: TrainConfig):
    """MixUp/CutMix on whole batches (torchvision v2); None when both are off."""
    from torchvision.transforms import v2 as T

    ops = []
    if cfg.augment.mixup > 0:
        ops.append(T.MixUp(alpha=cfg.augment.mixup, num_classes=2))
    if cfg.augment.cutmix > 0:
        ops.append(T.CutMix(alpha=cfg.augment.cutmix, num_classes=2))
    if not ops:
        return None
    return T.RandomApply([T.RandomChoice(ops)], p=cfg.augment.mix_prob)


def train_one_epoch(
    model,
    loader,
    opt,
    device,
    cfg: TrainConfig,
    frozen: bool,
    max_steps: int | None,
    desc: str,
    ema=None,
    step0=0,
    ctx: D.DistContext | None = None,
    net=None,
    teachers=None,
    data_config=None,
):
    """One pass over ``loader``; returns (mean loss, accuracy, images, bad indices), summed over all ranks.

    ``model`` is the plain module (EMA, BN modes); ``net`` the one to train through (its DDP wrapper, or
    ``model``). ``teachers`` (``engine.distill.Teachers``) add a distillation term on the same augmented
    batch; ``data_config`` is the student's (the teachers undo its normalisation). Under DDP each rank's loss
    is its per-sample sum scaled by world_size / global images, so the averaged gradient is the mean over the
    global batch even when unreadable files make shards uneven, and a rank whose shard of a step is empty still
    joins the gradient all-reduce (with a zero loss).
    """
    ctx = ctx or D.DistContext()
    net = net if net is not None else model
    model.train()
    mixer = _batch_mixer(cfg)
    if frozen:
        _set_bn_eval(model)
    reduction = "sum" if ctx.enabled else "mean"
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction=reduction)
    loss_sum, correct, n, bad = 0.0, 0, 0, []
    bar = tqdm(loader, desc=desc, leave=False, disable=None if ctx.is_main else True)
    for step, (images, y, _idx, bad_idx) in enumerate(bar):
        bad.extend(bad_idx)
        if max_steps is not None and step >= max_steps:
            break
        if ctx.enabled:
            local_n = 0 if images is None else len(y)
            (global_n,) = D.all_reduce_sum(ctx, [local_n], device)
            if global_n == 0:
                continue  # every rank skips this step, as a single process would
            if images is None:
                images, y = _dummy_batch(loader, device), torch.zeros(0, dtype=torch.long)
        elif images is None:
            continue
        target = y
        if mixer is not None and len(y):
            images, target = mixer(images, y)
        images, y, target = (t.to(device, non_blocking=True) for t in (images, y, target))
        images = to_memory_format(images, cfg.channels_last)
        with autocast(device, cfg.amp):
            logits = net(images)
            # An empty shard (all its files unreadable) still takes part in the all-reduce, with zero gradient.
            loss = logits.float().sum() * 0.0 if len(y) == 0 else loss_fn(logits.float(), target)
        if teachers is not None and len(y):
            kd = distill_loss(logits, teachers.probs(images, data_config), cfg.distill_temperature)
            # distill_loss is a batch mean; under DDP the label loss is a per-sample sum
            loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * (kd * len(y) if ctx.enabled else kd)
        opt.zero_grad(set_to_none=True)
        (loss * (ctx.world_size / global_n) if ctx.enabled else loss).backward()
        opt.step()
        if ema is not None:
            ema.update(model, step=step0 + step)
        if len(y):
            loss_sum += loss.item() if ctx.enabled else loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
            bar.set_postfix(loss=f"{loss_sum / n:.4f}", acc=f"{correct / n:.3f}")
    if ctx.enabled:
        loss_sum, correct, n = D.all_reduce_sum(ctx, [loss_sum, correct, n], device)
        bad = sorted(b for part in D.all_gather_object(ctx, bad) for b in part)
        correct, n = int(correct), int(n)
    return loss_sum / max(n, 1), correct / max(n, 1), n, bad


def _dummy_batch(loader: DataLoader, device: torch.device) -> torch.Tensor:
    """One black image of the dataset's shape (for a rank whose whole shard of a step was unreadable)."""
    ds = loader.dataset
    for i in range(len(ds)):
        img = ds[i][0]
        if img is not None:
            return torch.zeros((1, *img.shape), dtype=img.dtype)
    raise ValueError("no readable image in the training split")


def _run_dir(cfg: TrainConfig) -> Path:
    name = cfg.name or f"{cfg.model.name}-{datetime.now():%Y%m%d-%H%M%S}"
    return Path(cfg.out) / name


def _write_history(history: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        w.writeheader()
        for row in history:
            w.writerow({k: row[k] for k in HISTORY_COLUMNS})


def _format_row(r: dict[str, Any]) -> str:
    imp = r["v_loss_improvement_pct"]
    imp_s = "   n/a" if imp is None or math.isnan(imp) else f"{imp:6.2f}"
    return (
        f"epoch {r['epoch']:>3} [{r['phase']:<8}] train_loss {r['train_loss']:.4f} train_acc {r['train_acc']:.4f} | "
        f"valid_loss {r['valid_loss']:.4f} valid_acc {r['valid_acc']:.4f} valid_f1 {r['valid_f1']:.4f} "
        f"valid_auc {r['valid_auc']:.4f} | v_loss_impr% {imp_s} | lr {r['lr']:.2e} next_lr {r['next_lr']:.2e} | "
        f"{r['seconds']:.1f}s {r['images_per_s']:.1f} img/s"
    )


def fit(
    cfg: TrainConfig | None,
    resume: str | Path | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> Path:
    """Train per ``cfg`` (or continue the run in ``resume``); returns the run folder.

    Under torchrun (WORLD_SIZE > 1) every rank calls this; they train one DDP model and rank 0 writes.
    """
    if resume is not None:
        state, run_dir = _resume_state(Path(resume))
        cfg = TrainConfig.from_dict(state["config"])
    else:
        state, run_dir = None, None
        if cfg is None:
            raise ValueError("fit needs a config unless it resumes a run")
    ctx, device = D.setup(cfg.device)
    try:
        return _fit(cfg, state, run_dir, on_epoch_end, ctx, device)
    finally:
        D.teardown(ctx)


RESUME_KEYS = (
    "config",
    "epoch",
    "phase",
    "optimizer",
    "scheduler",
    "history",
    "best_auc",
    "best_loss",
    "best_epoch",
    "stale",
    "bad_train",
    "bad_valid",
)
"""What last.pt holds beyond a slim checkpoint, and --resume needs."""


def _resume_state(resume: Path) -> tuple[dict[str, Any], Path]:
    """The full training state to continue from and its run folder: ``resume`` is a run folder or its last.pt."""
    takes = "--resume takes a run folder of `dfdetect train` (it holds last.pt), or that last.pt"
    if resume.is_dir():
        last = resume / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"{resume} holds no last.pt; {takes}")
    elif resume.is_file():
        last = resume
    else:
        raise FileNotFoundError(f"{resume} not found; {takes}")
    state = load_checkpoint(last)
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        hint = f" (here: --resume {last.parent})" if (last.parent / "last.pt").is_file() else ""
        raise CheckpointError(
            f"{last} holds no training state (no {', '.join(missing[:3])}{', ...' * (len(missing) > 3)}: best.pt "
            f"is slim, for inference); {takes}{hint}"
        )
    return state, last.parent


def _make_dataset(items, cfg: TrainConfig, transform, data_config) -> ImageDataset:
    if cfg.data.cache_dir:
        from dfdetect.data.cache import CachedImageDataset

        size = cache_size(data_config)
        return CachedImageDataset(items, cfg.data.root, transform, cfg.data.cache_dir, size)
    return ImageDataset(items, cfg.data.root, transform)


def cache_size(data_config: dict[str, Any]) -> int:
    """Side of the pre-decoded cache's images: the model's resize side (at least its input size)."""
    return max(int(data_config.get("resize", data_config["input_size"][-1])), int(data_config["input_size"][-1]))


def _fit(cfg: TrainConfig, state, run_dir, on_epoch_end, ctx: D.DistContext, device: torch.device) -> Path:
    if state is not None:
        log.info("resuming %s from epoch %d", run_dir, state["epoch"])
    else:
        # Without --name the folder name has the time in it: rank 0's choice holds for every rank.
        run_dir = D.broadcast_object(ctx, _run_dir(cfg))
        if (run_dir / "last.pt").exists():
            raise FileExistsError(f"{run_dir} already holds a run; use --resume {run_dir} or another --name")
    if ctx.enabled and cfg.batch_size % ctx.world_size:
        raise ValueError(
            f"batch_size {cfg.batch_size} is the global batch and must divide evenly by the {ctx.world_size} ranks"
        )
    local_batch = cfg.batch_size // ctx.world_size
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    spec = get_spec(cfg.model.name)

    items, by_split, split_hash = _split_items(cfg, state, run_dir, ctx)
    if ctx.is_main:
        cfg.save_yaml(run_dir / "config.yaml")

    model, data_config = _build_model(cfg, state, device, ctx)
    train_ds, valid_ds = _datasets(cfg, items, by_split, data_config, ctx)
    _log_run(run_dir, spec, device, train_ds, valid_ds, len(by_split["test"]), data_config, cfg, ctx)

    total_epochs = cfg.warmup_epochs + cfg.epochs
    # --freeze-backbone: every epoch is a head-only ("warmup") epoch; the backbone never trains.
    frozen_run = bool(cfg.model.freeze_backbone)
    phase = "warmup" if cfg.warmup_epochs > 0 or frozen_run else "finetune"
    progress, start_epoch = _Progress(), 1
    if state is not None:
        model.load_state_dict(state["model"])
        phase, progress, start_epoch = state["phase"], _Progress.from_state(state), state["epoch"] + 1
    opt, sched = _phase_setup(model, cfg, phase)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    train_ds.known_bad.update(progress.bad_train)  # each bad file is logged once per run, not once per epoch
    valid_ds.known_bad.update(progress.bad_valid)
    ema, teachers = _ema_and_teachers(model, cfg, state, device)
    net = _wrap_ddp(model, ctx, device)

    for epoch in range(start_epoch, total_epochs + 1):
        if phase == "warmup" and epoch > cfg.warmup_epochs and not frozen_run:
            phase = "finetune"
            opt, sched = _phase_setup(model, cfg, phase)
            net = _wrap_ddp(model, ctx, device)  # DDP's gradient buckets cover the parameters that now train
        t0 = time.perf_counter()
        tr_loss, tr_acc, n_seen, bad = _train_epoch(
            model, net, train_ds, opt, cfg, phase, epoch, local_batch, device, ctx, ema, teachers, data_config
        )
        progress.bad_train.update(bad)
        train_ds.known_bad.update(bad)
        if n_seen == 0 and len(progress.bad_train) >= len(train_ds):
            raise ValueError(f"none of the {len(train_ds)} training images could be loaded (see the warnings above)")
        train_seconds = time.perf_counter() - t0
        # With EMA on, the averaged weights are what we validate, select and ship.
        eval_model = ema.module if ema is not None else model
        val = D.score_sharded(
            eval_model, valid_ds, local_batch * 2, cfg.data.num_workers, device, cfg.amp, "valid", ctx
        )
        progress.bad_valid.update(val["bad"])
        valid_ds.known_bad.update(val["bad"])
        vm = compute_metrics(val["labels"], val["scores"], 0.5)
        lr = opt.param_groups[0]["lr"]
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val["loss"])
        else:
            sched.step()
        row = {
            "epoch": epoch,
            "phase": phase,
            "train_loss": tr_loss,
            "train_acc": tr_acc,
            "valid_loss": val["loss"],
            "valid_acc": vm["accuracy"],
            "valid_f1": vm["f1"],
            "valid_auc": vm["roc_auc"],
            "v_loss_improvement_pct": progress.v_loss_improvement(val["loss"]),
            "lr": lr,
            "next_lr": opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
            "images_per_s": n_seen / max(train_seconds, 1e-9),
        }
        log.info(_format_row(row))
        # Every rank holds the same gathered validation result, so these decisions agree across ranks.
        auc = vm["roc_auc"] if not math.isnan(vm["roc_auc"]) else vm["accuracy"]
        if progress.record(row, auc, val["loss"]) and ctx.is_main:
            slim = _slim_checkpoint(eval_model, cfg, data_config, spec.timm_name, split_hash, epoch, row)
            slim["valid_scores"] = {"labels": val["labels"].tolist(), "scores": val["scores"].tolist()}
            save_checkpoint(slim, run_dir / "best.pt")
        if ctx.is_main:
            resume = {"phase": phase, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
            last = _slim_checkpoint(model, cfg, data_config, spec.timm_name, split_hash, epoch, row)
            _save_last(last | resume | progress.to_state(), ema, ctx, run_dir / "last.pt")
            _write_history(progress.history, run_dir / "history.csv")
            _plot_curves(progress.history, run_dir / "curves.png", progress.best_epoch)
        D.barrier(ctx)  # last.pt is complete before any rank can be stopped (and resumed) past this epoch
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if (phase == "finetune" or frozen_run) and cfg.early_stopping and progress.stale >= cfg.early_stopping:
            stale, best = progress.stale, progress.best_epoch
            log.info("early stopping: no better validation AUC for %d epochs (best epoch %d)", stale, best)
            break

    return _finish(run_dir, cfg, by_split, train_ds, valid_ds, progress, device, split_hash, ctx)


def _train_epoch(
    model: nn.Module,
    net: nn.Module,
    train_ds: ImageDataset,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    phase: str,
    epoch: int,
    local_batch: int,
    device: torch.device,
    ctx: D.DistContext,
    ema: Any,
    teachers: Teachers | None,
    data_config: dict[str, Any],
) -> tuple[float, float, int, set[int]]:
    """One epoch over this rank's shard of the training set: (loss, accuracy, images seen, unreadable indices)."""
    # Order: a function of (seed, epoch), the same on every rank and for any rank count.
    # Augmentation / dropout RNG: per rank (rank 0 draws what a single process draws).
    epoch_seed = cfg.seed * 1000 + epoch
    rank_seed = epoch_seed + 1_000_003 * ctx.rank
    torch.manual_seed(rank_seed)
    np.random.seed(rank_seed % 2**32)
    sampler = DistributedSampler(
        train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=cfg.seed * 1000
    )
    sampler.set_epoch(epoch)
    loader = make_loader(train_ds, local_batch, True, cfg.data.num_workers, seed=rank_seed, sampler=sampler)
    return train_one_epoch(
        model,
        loader,
        opt,
        device,
        cfg,
        phase == "warmup",
        cfg.max_steps_per_epoch,
        desc=f"epoch {epoch}/{cfg.warmup_epochs + cfg.epochs} {phase}",
        ema=ema,
        step0=(epoch - 1) * len(loader),
        ctx=ctx,
        net=net,
        teachers=teachers,
        data_config=data_config,
    )


@dataclass
class _Progress:
    """What a run has learnt so far, beyond the weights: saved in last.pt, restored by --resume."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_auc: float = -1.0
    best_loss: float = math.inf
    best_epoch: int = 0
    stale: int = 0  # epochs since the best one (early stopping)
    bad_train: set[int] = field(default_factory=set)
    bad_valid: set[int] = field(default_factory=set)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> _Progress:
        keys = ("history", "best_auc", "best_loss", "best_epoch", "stale")
        return cls(**{k: state[k] for k in keys}, bad_train=set(state["bad_train"]), bad_valid=set(state["bad_valid"]))

    def to_state(self) -> dict[str, Any]:
        """Plain types only, so last.pt loads with ``weights_only=True``."""
        return {
            "history": self.history,
            "best_auc": self.best_auc,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
            "bad_train": sorted(self.bad_train),
            "bad_valid": sorted(self.bad_valid),
        }

    def v_loss_improvement(self, valid_loss: float) -> float:
        """The paper's "V_loss improvement %": against the best validation loss of the epochs before (NaN first)."""
        prev = min((h["valid_loss"] for h in self.history), default=math.nan)
        return (prev - valid_loss) / prev * 100 if prev == prev else math.nan

    def record(self, row: dict[str, Any], auc: float, valid_loss: float) -> bool:
        """Add the epoch's row; True when it is the best so far (higher AUC, ties broken by lower loss)."""
        self.history.append(row)
        if auc > self.best_auc or (auc == self.best_auc and valid_loss < self.best_loss):
            self.best_auc, self.best_loss, self.best_epoch, self.stale = auc, valid_loss, row["epoch"], 0
            return True
        self.stale += 1
        return False


def _phase_setup(model: nn.Module, cfg: TrainConfig, phase: str) -> tuple[torch.optim.Optimizer, Any]:
    """Freeze or unfreeze the backbone for ``phase``, and a fresh optimizer and schedule over what trains."""
    freeze_backbone(model, phase == "warmup")
    opt = _optimizer(model, cfg, phase)
    return opt, _scheduler(opt, cfg, phase)


def _split_items(
    cfg: TrainConfig, state: dict[str, Any] | None, run_dir: Path, ctx: D.DistContext
) -> tuple[list, dict[str, list], str]:
    """The run's items (all, and by split) and the manifest's hash (one split.csv per run, read back on resume)."""
    # Data: one manifest per run, written before any training so the split is fixed and inspectable.
    manifest_path = run_dir / "split.csv"
    if state is not None and manifest_path.exists():
        items = resolve_items(cfg.data.root, manifest_path, 0, 0, 0)
    else:
        items = resolve_items(
            cfg.data.root, cfg.data.manifest, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed
        )
        items = limit_per_class(items, cfg.data.limit_per_class)
        if ctx.is_main:
            write_manifest(items, manifest_path, cfg.data.root)
        D.barrier(ctx)
    split_hash = manifest_hash(manifest_path)
    by_split = {s: [it for it in items if it.split == s] for s in ("train", "valid", "test")}
    for s in ("train", "valid"):
        if not by_split[s] or len({it.label for it in by_split[s]}) < 2:
            raise ValueError(f"the {s} split needs images of both classes; it has {len(by_split[s])} images")
    return items, by_split, split_hash


def _build_model(
    cfg: TrainConfig, state: dict[str, Any] | None, device: torch.device, ctx: D.DistContext
) -> tuple[nn.Module, dict[str, Any]]:
    """The model to train, on ``device`` (SyncBN under DDP when asked, channels-last), and its data config."""
    if state is not None and is_fusion(cfg.model.name):
        # A fusion model's member preprocessing lives in its checkpoint's data config, not in its name alone.
        model = model_from_checkpoint(state, drop_rate=cfg.model.drop_rate)
    else:
        model = create_model(
            cfg.model.name,
            weights="none" if state else cfg.model.weights,
            drop_rate=cfg.model.drop_rate,
            head=cfg.model.head,
        )
    data_config = data_config_for(model, cfg.model.img_size, cfg.model.resize_to)
    if ctx.enabled and cfg.sync_bn and device.type == "cuda":
        from timm.layers import convert_sync_batchnorm

        model = convert_sync_batchnorm(model)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    log.info("training on %s in %s%s", device, precision_name(device, cfg.amp), ", channels-last" * cfg.channels_last)
    return model, data_config


def _datasets(
    cfg: TrainConfig, items: list, by_split: dict[str, list], data_config: dict[str, Any], ctx: D.DistContext
) -> tuple[ImageDataset, ImageDataset]:
    """Train and valid datasets: the on-disk cache is built once by rank 0, the in-memory cache preloaded."""
    if cfg.data.cache_dir:
        from dfdetect.data.cache import build_cache

        if ctx.is_main:  # one decode for all ranks (and later runs); the others map the finished file
            build_cache(
                items,
                cfg.data.root,
                cfg.data.cache_dir,
                cache_size(data_config),
                data_config["interpolation"],
                threads=max(cfg.data.num_workers, 4),
            )
        D.barrier(ctx)
    train_ds = _make_dataset(by_split["train"], cfg, train_transform(data_config, cfg.augment), data_config)
    valid_ds = _make_dataset(by_split["valid"], cfg, eval_transform(data_config), data_config)
    if cfg.data.cache:
        for ds in (train_ds, valid_ds):
            ds.preload()
    return train_ds, valid_ds


def _save_last(ckpt: dict[str, Any], ema: Any, ctx: D.DistContext, path: Path) -> None:
    """last.pt: weights plus everything --resume needs to continue exactly (optimizer, schedule, EMA, bests)."""
    if ema is not None:
        ckpt["ema"] = {k: v.detach().cpu().clone() for k, v in ema.module.state_dict().items()}
    ckpt["world_size"] = ctx.world_size
    save_checkpoint(ckpt, path)


def _log_run(
    run_dir: Path,
    spec: Any,
    device: torch.device,
    train_ds: ImageDataset,
    valid_ds: ImageDataset,
    n_test: int,
    data_config: dict[str, Any],
    cfg: TrainConfig,
    ctx: D.DistContext,
) -> None:
    log.info(
        "run %s | %s (%s) on %s | train %d, valid %d, test %d | input %s",
        run_dir,
        spec.name,
        spec.timm_name,
        device,
        len(train_ds),
        len(valid_ds),
        n_test,
        data_config["input_size"],
    )
    if ctx.enabled:
        log.info(
            "DDP: %d ranks (%s), global batch %d = %d per rank",
            ctx.world_size,
            "nccl" if device.type == "cuda" else "gloo",
            cfg.batch_size,
            cfg.batch_size // ctx.world_size,
        )


def _ema_and_teachers(
    model: nn.Module, cfg: TrainConfig, state: dict[str, Any] | None, device: torch.device
) -> tuple[Any, Teachers | None]:
    """The weight EMA (restored on resume) and the distillation teachers, each None when off."""
    ema = None
    if cfg.ema > 0:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema, use_warmup=True)
        if state is not None and "ema" in state:
            ema.module.load_state_dict(state["ema"])
    teachers = None
    if cfg.teacher:
        if not 0.0 <= cfg.distill_alpha <= 1.0 or cfg.distill_temperature <= 0:
            raise ValueError("distill_alpha must be in [0, 1] and distill_temperature > 0")
        teachers = Teachers(cfg.teacher, cfg.distill_temperature, amp=cfg.teacher_amp).to(device)
        if cfg.channels_last:
            teachers.to(memory_format=torch.channels_last)
        log.info("teachers run in %s", precision_name(device, cfg.teacher_amp))  # the device they run on
    return ema, teachers


def _wrap_ddp(model: nn.Module, ctx: D.DistContext, device: torch.device) -> nn.Module:
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def _plot_curves(history, path, best_epoch):
    from dfdetect.core import plots

    plots.training_curves(history, path, best_epoch)


def _slim_checkpoint(model, cfg: TrainConfig, data_config, timm_name, split_hash, epoch, row) -> dict[str, Any]:
    return {
        "arch": cfg.model.name,
        "timm_name": timm_name,
        "classes": list(CLASSES),
        "data_config": data_config,
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": cfg.to_dict(),
        "epoch": epoch,
        "valid": {k: row[k] for k in ("valid_loss", "valid_acc", "valid_f1", "valid_auc")},
        "split_sha256": split_hash,
        "dfdetect_version": __version__,
        "threshold": 0.5,
    }


def _finish(run_dir, cfg, by_split, train_ds, valid_ds, progress: _Progress, device, split_hash, ctx=None) -> Path:
    """Pick the threshold on validation, evaluate best.pt on the test split, write the bad-file list."""
    ctx = ctx or D.DistContext()
    if ctx.is_main:
        best = load_checkpoint(run_dir / "best.pt")
        vs = best["valid_scores"]  # kept: calibration and threshold rules can be refitted later
        best["threshold"] = choose_threshold(vs["labels"], vs["scores"], cfg.threshold)
        best["threshold_rule"] = f"{cfg.threshold} (chosen on the validation split)"
        save_checkpoint(best, run_dir / "best.pt")
    D.barrier(ctx)
    if not ctx.is_main:
        best = load_checkpoint(run_dir / "best.pt")

    bad_paths = sorted(
        {str(train_ds.path(i)) for i in progress.bad_train} | {str(valid_ds.path(i)) for i in progress.bad_valid}
    )
    summary: dict[str, Any] = {
        "run": str(run_dir),
        "best_epoch": progress.best_epoch,
        "threshold": best["threshold"],
        "split_sha256": split_hash,
        "skipped_files": len(bad_paths),
    }
    if ctx.enabled:
        summary["world_size"] = ctx.world_size
    if cfg.evaluate_test and by_split["test"]:
        model = model_from_checkpoint(best, drop_rate=cfg.model.drop_rate)  # fusion: its members' preprocessing
        model.to(device)
        test_ds = _make_dataset(by_split["test"], cfg, eval_transform(best["data_config"]), best["data_config"])
        res = D.score_sharded(
            model,
            test_ds,
            max(cfg.batch_size // ctx.world_size, 1) * 2,
            cfg.data.num_workers,
            device,
            cfg.amp,
            "test",
            ctx,
        )
        bad_paths += [str(test_ds.path(i)) for i in res["bad"]]
        if ctx.is_main:
            m = write_eval_artifacts(
                res["labels"],
                res["scores"],
                [test_ds.items[i].path for i in res["index"]],
                best["threshold"],
                run_dir / "eval_test",
                extra={
                    "checkpoint": str(run_dir / "best.pt"),
                    "split": "test",
                    "split_sha256": split_hash,
                    "arch": cfg.model.name,
                    "skipped_files": [str(test_ds.path(i)) for i in res["bad"]],
                },
                n_boot=cfg.bootstrap,
                sources=[test_ds.items[i].source for i in res["index"]],
            )
            summary["test"] = {k: m[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "eer")}
            summary["test_ci95"] = m["ci95"]
            log.info(
                "test: acc %.4f  precision %.4f  recall %.4f  F1 %.4f  AUC %.4f  EER %.4f  (n=%d)",
                m["accuracy"],
                m["precision"],
                m["recall"],
                m["f1"],
                m["roc_auc"],
                m["eer"],
                m["n"],
            )
    if ctx.is_main:
        (run_dir / "bad_files.txt").write_text("".join(p + "\n" for p in bad_paths))
        if bad_paths:
            log.warning(
                "%d unreadable or unusable files were skipped; listed in %s", len(bad_paths), run_dir / "bad_files.txt"
            )
        summary["skipped_files"] = len(bad_paths)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    D.barrier(ctx)
    return run_dir
