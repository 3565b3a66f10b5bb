"""``dfdetect benchmark``: latency/throughput figures for a model, a folder scan, and predict's cold start."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dfdetect.cli.common import device_option, setup_logging


def benchmark_cmd(
    model: str = typer.Argument(None, help="Model name from `dfdetect models` or a checkpoint (default: shipped)."),
    img_size: int = typer.Option(None, help="Input size (default: the model's own)."),
    batch_sizes: str = typer.Option("1,8,32", help="Comma-separated batch sizes."),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="Also time ONNX Runtime (and OpenVINO when installed)."),
    threads: int = typer.Option(None, help="Intra-op threads (default: all cores)."),
    device: str = device_option(),
    scan: Path = typer.Option(None, help="Also time `predict` over this folder, end to end."),
    scan_backends: str = typer.Option(
        "auto",
        help="With --scan: comma-separated backends to time (auto | torch | onnx | openvino | openvino-bf16); "
        "all run fp32 except openvino-bf16 (reduced precision, asked for; the model alone is then timed in it too).",
    ),
    cold_start: Path = typer.Option(None, help="Also time a fresh `dfdetect predict IMAGE` process."),
    min_seconds: float = typer.Option(2.0, help="Time each setting at least this long."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    int8_data: Path = typer.Option(
        None, help="Also time ONNX Runtime int8 and report its accuracy change on this data (checkpoint only)."
    ),
    int8_mode: str = typer.Option(
        "dynamic", help="dynamic | static (QDQ, activation ranges calibrated on the data's train split)."
    ),
    manifest: Path = typer.Option(None, help="With --int8-data: split manifest (default: the model's own split)."),
) -> None:
    """Measure speed: torch eager vs ONNX Runtime vs OpenVINO side by side, batch-1 latency p50/p95, throughput."""

    from dfdetect.analysis.benchmark import (
        benchmark_cold_start,
        benchmark_model,
        benchmark_scan,
        format_model_result,
        scan_vs_model,
    )

    setup_logging()
    from dfdetect.runtime.detector import model_file

    if model is not None:
        model = str(model_file(model))  # `default` / `large`: the shipped weights (their .onnx beside them)
    sizes = tuple(int(b) for b in batch_sizes.split(",") if b.strip())
    # a reduced-precision scan gets model-alone rows in the same precision (its scan / model ratio)
    precisions = tuple(dict.fromkeys(b.strip().partition("-")[2] or "fp32" for b in (scan_backends or "").split(",")))
    try:
        out = {
            "model": benchmark_model(
                model, img_size, sizes, onnx, threads, device, min_seconds=min_seconds, precisions=precisions
            )
        }
    except ValueError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if scan:
        ref = model if model and Path(model).exists() else None
        try:
            out["scan"] = []
            for b in (b.strip() for b in scan_backends.split(",")):
                if not b:
                    continue
                backend, _, precision = b.partition("-")
                out["scan"].append(
                    benchmark_scan(scan, _scan_model(ref, backend), backend, precision=precision or "fp32")
                )
        except (ValueError, ImportError, FileNotFoundError) as e:
            typer.secho(f"error: --scan: {e}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
    for s in out.get("scan", []):
        s["vs_model_alone"] = scan_vs_model(s, out["model"])
    if cold_start:
        out["cold_start"] = benchmark_cold_start(cold_start, model if model and Path(model).exists() else None)
    if int8_data:
        from dfdetect.analysis.benchmark import benchmark_int8

        if not (model and Path(model).is_file()):
            raise typer.BadParameter("--int8-data needs a trained checkpoint as MODEL (accuracy is measured)")
        if int8_mode not in ("dynamic", "static"):
            raise typer.BadParameter(f"--int8-mode must be dynamic or static, not {int8_mode!r}")
        out["int8"] = benchmark_int8(
            model, int8_data, manifest=manifest, threads=threads, min_seconds=min_seconds, mode=int8_mode
        )
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(format_model_result(out["model"]))
    for s in out.get("scan", []):
        ratio = s["vs_model_alone"]
        typer.echo(
            f"scan {s['folder']}: {s['images']} images in {s['seconds']:.2f} s = {s['images_per_s']:.1f} images/s "
            f"({s['backend']} {s['precision']}, batch {s['batch_size']}, {s['workers']} decode threads, "
            f"model {s['model']})"
            + (f"; {ratio:.2f} of the model alone at batch {s['batch_size']}" if ratio is not None else "")
        )
    if int8_data:
        from dfdetect.analysis.benchmark import format_int8_result

        typer.echo(format_int8_result(out["int8"]))
    if cold_start:
        c = out["cold_start"]
        typer.echo(f"cold start `{c['command']}`: median {c['median_s']:.2f} s over {c['runs']} runs")


def _scan_model(ref: str | None, backend: str) -> str | None:
    """The file a scan on ``backend`` loads: ONNX backends use the checkpoint's export beside it."""
    if ref is None or backend not in ("onnx", "openvino") or Path(ref).suffix == ".onnx":
        return ref
    exported = Path(ref).with_suffix(".onnx")
    if not exported.is_file():
        raise ValueError(f"a {backend} scan needs the exported model {exported}: dfdetect export {ref}")
    return str(exported)


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark_cmd)
