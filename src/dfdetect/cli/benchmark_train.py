"""``dfdetect benchmark-train``: training throughput (images/s) of a backbone, per GPU count under torchrun.

Compute: forward + backward + AdamW step on a synthetic batch held on the device (so the figure is what
the model costs, not the disk). Under ``torchrun --nproc_per_node N -m dfdetect benchmark-train`` the
model is wrapped in DDP (gradient all-reduce included) and the figure is for all N ranks together.
With ``--data DIR`` it also times the input pipeline (decode + augmentation in DataLoader workers, or the
memory-mapped cache with ``--cache-dir``), which must beat the compute figure to keep the GPUs fed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from dfdetect.cli.common import device_option, setup_logging


def benchmark_train(
    model: str = "efficientnet_lite0",
    img_size: int | None = None,
    batch_size: int = 32,
    device: str = "auto",
    amp: bool = True,
    channels_last: bool = True,
    steps: int = 20,
    warmup: int = 3,
) -> dict[str, Any]:
    """Time ``steps`` training steps (after ``warmup``) with global batch ``batch_size``; every rank calls it."""
    import time

    import torch
    from torch import nn

    from dfdetect.core.device import amp_dtype, autocast, precision_name
    from dfdetect.engine import distributed as D
    from dfdetect.models.factory import create_model, data_config_for
    from dfdetect.models.registry import get_spec

    ctx, dev = D.setup(device)
    try:
        if batch_size % ctx.world_size:
            raise ValueError(f"batch size {batch_size} must divide by the {ctx.world_size} ranks")
        local = batch_size // ctx.world_size
        torch.manual_seed(0)
        net = create_model(model, weights="none")
        size = int(data_config_for(net, img_size)["input_size"][-1])
        net.to(dev).train()
        cl = channels_last
        if cl:
            net.to(memory_format=torch.channels_last)
        train_net = net
        if ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_net = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        x = torch.randn(local, 3, size, size, device=dev)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 2, (local,), device=dev)
        loss_fn = nn.CrossEntropyLoss()

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            D.barrier(ctx)

        for i in range(warmup + steps):
            if i == warmup:
                sync()
                t0 = time.perf_counter()
            with autocast(dev, amp):
                logits = train_net(x)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        (seconds,) = D.all_reduce_sum(ctx, [time.perf_counter() - t0], dev)
        seconds /= ctx.world_size
        images = steps * local * ctx.world_size
        ips = images / seconds
        return {
            "model": model,
            "timm_name": get_spec(model).timm_name,
            "img_size": size,
            "batch_size": batch_size,
            "per_rank_batch": local,
            "world_size": ctx.world_size,
            "device": torch.cuda.get_device_name(dev)
            if dev.type == "cuda"
            else f"cpu ({torch.get_num_threads()} threads)",
            "amp_bf16": amp_dtype(dev, amp) is not None,
            "precision": precision_name(dev, amp),
            "channels_last": cl,
            "steps": steps,
            "seconds": seconds,
            "images_per_s": ips,
            "images_per_s_per_rank": ips / ctx.world_size,
            "seconds_per_100k": 100_000 / ips,
            "is_main": ctx.is_main,
        }
    finally:
        D.teardown(ctx)


def benchmark_loader(
    data: Path, model: str, img_size: int | None, batch_size: int, workers: int, batches: int, cache_dir: Path | None
) -> dict[str, Any]:
    """Images/s of the training input pipeline alone (decode or cache read + augmentation + collate)."""
    import time

    import torch

    from dfdetect.core.config import AugmentConfig
    from dfdetect.data.datasets import ImageDataset, make_loader, resolve_items
    from dfdetect.data.transforms import train_transform
    from dfdetect.engine.train import cache_size
    from dfdetect.models.factory import create_model, data_config_for

    dc = data_config_for(create_model(model, weights="none"), img_size)
    items = resolve_items(data, None, 0.0, 0.0, 0)
    if cache_dir:
        from dfdetect.data.cache import CachedImageDataset, build_cache

        t = time.perf_counter()
        build_cache(items, data, cache_dir, cache_size(dc), dc["interpolation"], threads=max(workers, 4))
        build_s = time.perf_counter() - t
        ds: ImageDataset = CachedImageDataset(
            items, data, train_transform(dc, AugmentConfig()), cache_dir, cache_size(dc)
        )
    else:
        build_s = 0.0
        ds = ImageDataset(items, data, train_transform(dc, AugmentConfig()))
    loader = make_loader(ds, batch_size, True, workers, seed=0)
    n, t0 = 0, None
    for i, (images, _y, _idx, _bad) in enumerate(loader):
        if i == 1:  # skip worker start-up
            t0, n = time.perf_counter(), 0
        n += 0 if images is None else len(images)
        if i >= batches:
            break
    seconds = time.perf_counter() - (t0 or time.perf_counter())
    return {
        "source": "memory-mapped cache" if cache_dir else "JPEG decode",
        "cache_build_s": build_s,
        "workers": workers,
        "threads": torch.get_num_threads(),
        "images": n,
        "images_per_s": n / max(seconds, 1e-9),
    }


def benchmark_train_cmd(
    model: str = typer.Option("efficientnet_lite0", "--model", "-m", help="Backbone name (see `dfdetect models`)."),
    img_size: int = typer.Option(None, help="Input size (default: the backbone's)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Global batch (split over torchrun ranks)."),
    device: str = device_option(),
    amp: bool = typer.Option(True, "--amp/--no-amp", help="bf16 autocast (CUDA; CPUs with native bf16)."),
    channels_last: bool = typer.Option(True, "--channels-last/--no-channels-last", help="channels-last layout."),
    sweep: bool = typer.Option(
        False, "--sweep", help="Time every setting side by side: contiguous / channels-last x fp32 / bf16."
    ),
    steps: int = typer.Option(20, help="Timed steps (after the warm-up steps)."),
    warmup: int = typer.Option(3, help="Untimed warm-up steps."),
    data: Path = typer.Option(None, help="Also time the input pipeline on this folder."),
    cache_dir: Path = typer.Option(None, help="With --data: read through the memory-mapped image cache."),
    workers: int = typer.Option(4, min=0, help="With --data: DataLoader workers."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Training throughput (images/s, seconds per 100k images); run under torchrun for N GPUs."""

    setup_logging()
    if sweep:
        _sweep(model, img_size, batch_size, device, steps, warmup, as_json)
        return
    r = benchmark_train(model, img_size, batch_size, device, amp, channels_last, steps, warmup)
    if not r.pop("is_main"):
        return
    if data:
        r["input_pipeline"] = benchmark_loader(data, model, img_size, r["per_rank_batch"], workers, 20, cache_dir)
    if as_json:
        typer.echo(json.dumps(r, indent=2))
        return
    typer.echo(
        f"{r['model']} ({r['timm_name']}) {r['img_size']} px, batch {r['batch_size']} "
        f"({r['world_size']} x {r['per_rank_batch']}), {r['device']}, amp {r['amp_bf16']}, "
        f"channels-last {r['channels_last']}: {r['images_per_s']:.1f} images/s "
        f"({r['images_per_s_per_rank']:.1f} per rank), {r['seconds_per_100k']:.0f} s per 100k images"
    )
    if data:
        p = r["input_pipeline"]
        typer.echo(
            f"input pipeline ({p['source']}, {p['workers']} workers): {p['images_per_s']:.1f} images/s"
            + (f"; cache built in {p['cache_build_s']:.1f} s" if p["cache_build_s"] else "")
        )


def _sweep(model: str, img_size: int | None, batch_size: int, device: str, steps: int, warmup: int, as_json: bool):
    """The four layout x precision settings in one process, so their ratios are comparable on a noisy machine."""
    import torch

    from dfdetect.core.device import amp_dtype, cpu_features, resolve_device

    dev = resolve_device(device)
    native = amp_dtype(dev, True) is not None
    rows = []
    for cl, amp in ((False, False), (True, False), (False, True), (True, True)):
        label = f"{'channels-last' if cl else 'contiguous'} + {'bf16' if amp else 'fp32'}"
        if amp and not native:
            rows.append({"setting": label, "skipped": "this CPU has no native bf16 (AVX-512 BF16 / AMX)"})
            continue
        r = benchmark_train(model, img_size, batch_size, device, amp, cl, steps, warmup)
        r.pop("is_main")
        rows.append({"setting": label, **r})
    base = next(r["images_per_s"] for r in rows if "images_per_s" in r)
    if as_json:
        feats = cpu_features() if dev.type == "cpu" else {}
        typer.echo(json.dumps({"cpu_features": feats, "threads": torch.get_num_threads(), "rows": rows}, indent=2))
        return
    head = rows[0]
    typer.echo(f"{model} {head.get('img_size', '')} px, batch {batch_size}, {head.get('device', dev)}")
    typer.echo(f"{'setting':<28}{'images/s':>10}{'vs contiguous fp32':>20}")
    for r in rows:
        if "skipped" in r:
            typer.echo(f"{r['setting']:<28}{'-':>10}{'':>20}  skipped: {r['skipped']}")
        else:
            typer.echo(f"{r['setting']:<28}{r['images_per_s']:>10.1f}{r['images_per_s'] / base:>19.2f}x")


def register(app: typer.Typer) -> None:
    app.command("benchmark-train")(benchmark_train_cmd)
