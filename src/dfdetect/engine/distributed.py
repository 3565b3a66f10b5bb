"""DistributedDataParallel plumbing for ``dfdetect train`` under ``torchrun`` (one node or several).

``torchrun`` sets RANK / WORLD_SIZE / LOCAL_RANK (and the rendezvous address); :func:`setup` reads them,
joins the process group (NCCL on CUDA, gloo on CPU) and picks ``cuda:LOCAL_RANK``. Without those
variables everything here is a no-op and training runs in one process exactly as before.

Conventions used by the training loop:
  * ``batch_size`` is the GLOBAL batch: each rank takes ``batch_size // world_size`` per step.
  * Training order comes from a :class:`~torch.utils.data.DistributedSampler` seeded per epoch with the
    same scheme as the single-process run, so global batch k holds the same images whatever N is.
  * Validation and test: each rank scores a disjoint shard (every ``world_size``-th image, no padding),
    the shards are all-gathered and sorted by dataset index, so every rank sees the same metrics,
    computed on every image exactly once.
  * Only rank 0 writes files; the other ranks wait at barriers.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """True when :func:`setup` created the process group (so :func:`teardown` destroys it)."""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _wants_cuda(device: str) -> bool:
    if device == "auto":
        return torch.cuda.is_available()
    return device.startswith("cuda")


def setup(device: str = "auto") -> tuple[DistContext, torch.device]:
    """Join the process group when launched by torchrun (or reuse one the caller made); pick the device."""
    from dfdetect.core.device import DeviceUnavailableError, resolve_device

    if dist.is_available() and dist.is_initialized():
        ctx = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False)
    elif env_world_size() > 1:
        if not dist.is_available():
            raise DeviceUnavailableError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        cuda = _wants_cuda(device)
        if cuda and not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {device!r} requested but CUDA is not available here; use --device cpu"
            )
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, True)
    else:
        return DistContext(), resolve_device(device)
    if _wants_cuda(device):
        dev = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = resolve_device(device)
    if not ctx.is_main:
        # Logging is rank 0's job; other ranks still report warnings and errors.
        logging.getLogger("dfdetect").setLevel(logging.WARNING)
    return ctx, dev


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(ctx: DistContext, obj: Any) -> list[Any]:
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(ctx: DistContext, values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (float64; on the device, which NCCL needs)."""
    if not ctx.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


class ShardSampler(Sampler[int]):
    """Every ``world_size``-th index starting at ``rank``: disjoint shards, no padding, no duplicates."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def score_sharded(model, ds, batch_size: int, workers: int, device, amp: bool, desc: str, ctx: DistContext):
    """``score_loader`` over the whole dataset, split across ranks; every rank gets the merged result."""
    from dfdetect.data.datasets import collate
    from dfdetect.engine.evaluate import score_loader

    loader = DataLoader(
        ds,
        batch_size=batch_size,
        sampler=ShardSampler(len(ds), ctx.rank, ctx.world_size),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    res = score_loader(model, loader, device, amp, desc)
    if not ctx.enabled:
        return res
    parts = all_gather_object(
        ctx,
        {
            "labels": res["labels"],
            "scores": res["scores"],
            "index": res["index"],
            "bad": res["bad"],
            "loss_sum": res["loss"] * len(res["labels"]),
        },
    )
    index = np.concatenate([p["index"] for p in parts]).astype(int)
    order = np.argsort(index, kind="stable")  # the single-process order (dataset order)
    n = len(index)
    return {
        "labels": np.concatenate([p["labels"] for p in parts]).astype(int)[order],
        "scores": np.concatenate([p["scores"] for p in parts]).astype(float)[order],
        "index": index[order],
        "bad": sorted(b for p in parts for b in p["bad"]),
        "loss": sum(p["loss_sum"] for p in parts) / max(n, 1),
    }


def strip_nproc(args: list[str]) -> list[str]:
    """``args`` without ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch_torchrun(nproc: int, train_args: list[str]) -> int:
    """Re-run ``dfdetect train ARGS`` as ``torchrun --standalone --nproc_per_node N``; returns its exit code."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "dfdetect",
        "train",
        *strip_nproc(train_args),
    ]
    log.info("launching: %s", " ".join(cmd))
    return subprocess.call(cmd)
