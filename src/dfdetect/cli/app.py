"""The ``dfdetect`` Typer app: the root group (typo suggestions, --version) and the core verbs (models, train,
evaluate, predict, export); the other verb groups register themselves from their own modules."""

from __future__ import annotations

import difflib
import json
import logging
import os
import sys
from pathlib import Path

import click
import typer
from typer.core import TyperGroup

from dfdetect.cli.common import EXPECTED_ERRORS, device_option, fail, given_settings, setup_logging, threshold_option


class _SuggestingGroup(TyperGroup):
    """Answers a mistyped command with the closest valid one."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as e:
            if args and args[0] not in self.commands:
                hint = difflib.get_close_matches(args[0], list(self.commands), n=1, cutoff=0.5)
                valid = ", ".join(sorted(self.commands))
                msg = f"No such command {args[0]!r}."
                msg += f" Did you mean {hint[0]!r}?" if hint else ""
                raise click.UsageError(f"{msg} Commands: {valid}", ctx) from e
            raise


app = typer.Typer(
    cls=_SuggestingGroup,
    help="dfdetect: deepfake-image forensics. Label fake = 1; every score is P(fake).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

log = logging.getLogger("dfdetect")


def _version(value: bool) -> None:
    if value:
        from dfdetect.core.version import __version__

        typer.echo(f"dfdetect {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    pass


@app.command("models")
def models_cmd() -> None:
    """List the backbones in the name table and where their weights can come from."""
    from dfdetect.models.registry import list_models

    typer.echo(f"{'name':<22}{'timm architecture':<24}{'paper':<7}{'offline ImageNet':<18}note")
    for s in list_models():
        typer.echo(
            f"{s.name:<22}{s.timm_name:<24}{'yes' if s.paper else '':<7}"
            f"{'yes' if s.offline_package else '':<18}{s.note}"
        )
    typer.echo(
        "\nAlso: any name with --head attention|attnpool|multiscale; two-backbone fusion as fusion:A+B "
        "(sizes optional: fusion:efficientnet_lite0@320+mobilenetv2@384); ensembles via `dfdetect ensemble`."
    )


TRAIN_ONLY_FLAGS = ("ctx", "config", "offline_weights", "pretrained", "nproc", "resume", "verbose")
"""train options that are not training settings; every other option sets the config field of its name."""


@app.command()
def train(
    ctx: typer.Context,
    data: Path | None = typer.Option(None, "--data", "-d", help="Data folder: ROOT/{real,fake} or the 140k layout."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Backbone name (see `dfdetect models`), or fusion:A+B (two-backbone fusion)."
    ),
    weights: str | None = typer.Option(
        None,
        "--weights",
        "-w",
        help="Initial weights: none | offline | hub | PATH to a checkpoint; fusion: also one per member (a,b).",
    ),
    offline_weights: bool = typer.Option(False, "--offline-weights", help="Shortcut for --weights offline."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Shortcut for --weights hub (needs internet)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config; flags override it."),
    epochs: int | None = typer.Option(None, help="Fine-tuning epochs (after warm-up)."),
    warmup_epochs: int | None = typer.Option(None, help="Head-only epochs with the backbone frozen."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b"),
    lr: float | None = typer.Option(None, help="Fine-tuning learning rate (AdamW)."),
    head_lr: float | None = typer.Option(None, help="Warm-up learning rate (AdamW)."),
    weight_decay: float | None = typer.Option(None),
    label_smoothing: float | None = typer.Option(None),
    scheduler: str | None = typer.Option(None, help="plateau | cosine"),
    early_stopping: int | None = typer.Option(None, help="Patience in epochs (0 = off)."),
    img_size: int | None = typer.Option(None, help="Input size in pixels (default: the backbone's)."),
    resize: int | None = typer.Option(None, help="Resize the shorter side to this before cropping."),
    rotation: float | None = typer.Option(None, help="Augmentation: max rotation (degrees)."),
    scale: float | None = typer.Option(None, help="Augmentation: max zoom in/out (fraction)."),
    hflip: float | None = typer.Option(None, help="Augmentation: horizontal flip probability."),
    jpeg_prob: float | None = typer.Option(None, help="Augmentation: JPEG re-compression probability."),
    blur_prob: float | None = typer.Option(None, help="Augmentation: Gaussian blur probability."),
    mixup: float | None = typer.Option(None, help="MixUp alpha (0 = off)."),
    cutmix: float | None = typer.Option(None, help="CutMix alpha (0 = off)."),
    ema: float | None = typer.Option(None, help="Weight EMA decay, e.g. 0.998 (0 = off)."),
    teacher: list[Path] | None = typer.Option(
        None, "--teacher", help="Distil from this checkpoint (repeat for an ensemble of teachers; mean of P)."
    ),
    distill_alpha: float | None = typer.Option(None, help="Weight of the distillation loss (0-1)."),
    distill_temperature: float | None = typer.Option(None, help="Softmax temperature for distillation."),
    teacher_amp: bool | None = typer.Option(
        None,
        "--teacher-amp/--no-teacher-amp",
        help="Teachers' forward passes in bf16 autocast where native (default on; the student follows --amp).",
    ),
    drop_rate: float | None = typer.Option(None, help="Dropout before the dense layer."),
    head: str | None = typer.Option(
        None, "--head", help="Classifier head: linear | attention (CBAM) | attnpool | multiscale."
    ),
    freeze_backbone: bool = typer.Option(
        False,
        "--freeze-backbone",
        "--freeze-members",
        help="Train the head only for the whole run (backbone, or a fusion model's members, stay frozen).",
    ),
    threshold: str | None = typer.Option(None, help="Stored threshold: number | eer | f1 | fpr1 (on validation)."),
    val_fraction: float | None = typer.Option(None),
    test_fraction: float | None = typer.Option(None),
    split_seed: int | None = typer.Option(None),
    manifest: Path | None = typer.Option(None, help="Reuse a split manifest (CSV)."),
    limit_per_class: int | None = typer.Option(None, help="At most N images per class and split."),
    max_steps: int | None = typer.Option(None, help="Cap steps per epoch (smoke runs)."),
    workers: int | None = typer.Option(None, help="DataLoader workers."),
    cache: bool = typer.Option(False, "--cache", help="Decode all images once into memory."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Pre-decoded uint8 image cache folder (memory-mapped; built once, reused)."
    ),
    nproc: int | None = typer.Option(
        None, "--nproc", help="Launch N DDP processes on this machine via torchrun (batch size stays global)."
    ),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="SyncBatchNorm across DDP ranks (CUDA)."),
    seed: int | None = typer.Option(None),
    bootstrap: int | None = typer.Option(None, help="Bootstrap resamples for the test-split CIs (default 1000)."),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    amp: bool | None = typer.Option(
        None, "--amp/--no-amp", help="bf16 autocast on CUDA and on CPUs with native bf16 (default on; else fp32)."
    ),
    channels_last: bool | None = typer.Option(
        None, "--channels-last/--no-channels-last", help="channels-last memory format (default on, CPU and CUDA)."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Parent folder of run folders (default runs/)."),
    name: str | None = typer.Option(None, help="Run folder name."),
    resume: Path | None = typer.Option(None, help="Continue an interrupted run (its folder or last.pt)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train a detector: head-only warm-up, then fine-tuning; evaluates the best checkpoint on the test split."""
    setup_logging(verbose)
    if nproc is not None and nproc > 1:
        from dfdetect.engine.distributed import env_world_size, launch_torchrun

        if env_world_size() == 1:
            args = sys.argv[1:]
            raise typer.Exit(launch_torchrun(nproc, args[args.index("train") + 1 :] if "train" in args else args))
    from dfdetect.core.config import TrainConfig
    from dfdetect.engine.train import fit
    from dfdetect.models.registry import get_spec

    if resume is not None:
        try:
            run = fit(TrainConfig(), resume=resume)
        except EXPECTED_ERRORS as e:
            fail(str(e))
        if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
            typer.echo(str(run))
        return
    cfg = TrainConfig.load_yaml(config) if config else TrainConfig()
    if offline_weights:
        weights = "offline"
    if pretrained:
        weights = "hub"
    try:
        cfg.apply_overrides({**given_settings(ctx, TRAIN_ONLY_FLAGS), "weights": weights})
    except ValueError as e:
        fail(str(e))
    if not cfg.data.root:
        fail("--data is required (a folder with real/ and fake/, or the 140k layout)")
    try:
        get_spec(cfg.model.name)
        run = fit(cfg)
    except EXPECTED_ERRORS as e:
        fail(str(e))
    if os.environ.get("RANK", "0") == "0":
        typer.echo(str(run))


@app.command()
def evaluate(
    checkpoint: Path = typer.Argument(
        ..., help="Checkpoint from `dfdetect train` (best.pt), shipped .safetensors, or exported .onnx."
    ),
    data: list[Path] = typer.Option(..., "--data", "-d", help="Data folder(s); each is reported separately."),
    split: str = typer.Option("test", help="Which split to score when the data or run has splits."),
    manifest: Path | None = typer.Option(None, help="Split manifest (CSV) to take the split from."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output folder (default: eval_DATA_SPLIT beside the checkpoint, SPLIT 'all' when every image is scored; "
        "for a shipped model, eval_MODEL_DATA_SPLIT in the current folder).",
    ),
    threshold: float | None = typer.Option(
        None, help="Override the checkpoint's threshold.", callback=threshold_option
    ),
    device: str = device_option(),
    batch_size: int = typer.Option(64, min=1),
    workers: int = typer.Option(2, min=0),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the 95% confidence intervals."),
    part: list[str] | None = typer.Option(
        None, "--part", help="Also report a union of manifest folders: NAME=FOLDER+FOLDER (repeatable)."
    ),
    backend: str = typer.Option(
        "auto", help="auto | torch | onnx | openvino, as in predict (.onnx files run on onnx or openvino)."
    ),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (OpenVINO; measures the reduced precision's effect)."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
) -> None:
    """Evaluate a checkpoint: paper metrics + AUC/AP/EER with 95% CIs, confusion matrix, ROC, misclassifications."""
    setup_logging()
    from dfdetect.engine.evaluate import evaluate_checkpoint, format_report

    parts = {}
    for p in part or []:
        name, sep, members = p.partition("=")
        if not sep or not name or not members:
            fail(f"--part takes NAME=FOLDER+FOLDER, not {p!r}")
        parts[name] = members.split("+")
    results = {}
    for d in data:
        sub = (out / d.name if len(data) > 1 else out) if out else None
        try:
            m = evaluate_checkpoint(
                checkpoint,
                d,
                sub,
                split,
                manifest,
                threshold,
                device,
                batch_size,
                workers,
                n_boot=bootstrap,
                parts=parts,
                backend=backend,
                precision=precision,
            )
        except EXPECTED_ERRORS as e:
            fail(str(e))
        results[str(d)] = m
        if not as_json:
            typer.echo(f"== {d} ({m['images']}) -> {m['out_dir']}")
            typer.echo(format_report(m))
    if as_json:
        keys = ("n", "accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "eer", "threshold")
        keys += ("tpr_at_fpr_1pct",)

        def brief(m: dict) -> dict:
            r = {k: m[k] for k in keys} | {"ci95": m["ci95"]}
            if m.get("by_source"):
                r["by_source"] = {s: {k: v[k] for k in keys} | {"ci95": v["ci95"]} for s, v in m["by_source"].items()}
            return r

        typer.echo(json.dumps({d: brief(m) for d, m in results.items()}, indent=2))
    elif len(results) > 1:
        typer.echo(f"{'data':<40}{'n':>6}{'acc':>8}{'AUC':>8}{'EER':>8}")
        for d, m in results.items():
            typer.echo(f"{d:<40}{m['n']:>6}{m['accuracy']:>8.4f}{m['roc_auc']:>8.4f}{m['eer']:>8.4f}")


@app.command()
def predict(
    paths: list[str] = typer.Argument(..., help="Image files, folders (recursive) or globs."),
    model: Path | None = typer.Option(None, "--model", "-m", help="Checkpoint, or a shipped model: default | large."),
    threshold: float | None = typer.Option(
        None, help="Override the model's stored threshold.", callback=threshold_option
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON lines, one per image."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Also write results to this CSV file."),
    device: str = device_option(),
    backend: str = typer.Option(
        "auto", help="auto | torch | onnx | openvino (auto: OpenVINO, else ONNX Runtime, on CPU when installed)."
    ),
    precision: str = typer.Option(
        "fp32", help="fp32 | bf16 (bf16: OpenVINO only, faster on AVX-512 BF16/AMX CPUs, scores move; see README)."
    ),
    batch_size: int = typer.Option(32, min=1),
    workers: int = typer.Option(2, min=0, help="Decoding threads (0 = decode in the main thread)."),
    faces: bool | None = typer.Option(
        None, "--faces/--no-faces", help="Face mode: score each face (default: auto for large/non-square images)."
    ),
    min_face: int = typer.Option(40, help="Face mode: smallest face box (px) to detect."),
    align: bool = typer.Option(True, "--align/--no-align", help="Face mode: level each face by its eyes."),
) -> None:
    """Score images: verdict and P(fake) per image. Exit code 1 when nothing could be scored."""
    setup_logging()
    from dfdetect.runtime.detector import Detector

    if csv_path is not None:
        try:  # before scoring: a bad --csv path must not cost the results
            csv_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            fail(f"--csv {csv_path}: cannot create its folder ({e.strerror})")
    try:
        det = Detector.load(model, device=device, backend=backend, precision=precision)
        # the one predict path (dfdetect.runtime.pipeline): whole image or faces by one rule (docs/faces.md)
        preds = det.predict(
            paths,
            batch_size=batch_size,
            workers=workers,
            threshold=threshold,
            progress=not as_json and sys.stderr.isatty(),
            faces=faces,
            min_face=min_face,
            align=align,
        )
    except EXPECTED_ERRORS as e:
        fail(str(e))
    if csv_path:
        import csv

        from dfdetect.core.text import csv_safe

        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for p in preds for k in p.to_dict())) or ["path"])
            w.writeheader()
            for p in preds:
                w.writerow({k: csv_safe(json.dumps(v) if isinstance(v, list) else v) for k, v in p.to_dict().items()})
    if as_json:
        for p in preds:
            typer.echo(json.dumps(p.to_dict()))
    else:
        from dfdetect.core.text import printable
        from dfdetect.runtime.pipeline import summarize

        width = max([len(printable(p.path)) for p in preds] + [4])
        typer.echo(f"{'path':<{width}}  {'verdict':<8}{'P(fake)':>8}  sha256")
        for p in preds:
            shown = printable(p.path)  # a file name must not drive the analyst's terminal
            if p.error:
                tag = "SKIPPED" if p.mode == "skipped" else "ERROR"
                typer.echo(f"{shown:<{width}}  {tag:<8}{'':>8}  {printable(p.error)}")
            else:
                note = f"  {p.decided_by}" if p.decided_by else ""
                typer.echo(f"{shown:<{width}}  {p.label:<8}{p.score:>8.4f}  {p.sha256[:16]}{note}")
            for w in p.warnings:
                typer.echo(f"{'':<{width}}  warning: {w}")
        c = summarize(preds)
        skipped = ", ".join(f"{n} {why}" for why, n in c["skipped"].items())
        typer.echo(
            f"{c['scored']} scored ({c['fake']} fake, {c['real']} real; {c['with_warnings']} with warnings), "
            f"{c['unreadable']} unreadable, {sum(c['skipped'].values())} skipped{f' ({skipped})' if skipped else ''}; "
            f"model {det.model_id}, threshold {det.threshold if threshold is None else threshold:.4f}"
        )
    if not preds:
        typer.secho(f"error: no files found in {' '.join(map(str, paths))}", fg=typer.colors.RED, err=True)
    if not any(p.error is None for p in preds):
        raise typer.Exit(1)


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.pt from train, .safetensors, or a shipped name)."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Output .onnx (default: beside the checkpoint; for a shipped model, MODEL.onnx in the current folder).",
    ),
    opset: int = typer.Option(17),
) -> None:
    """Export a checkpoint to ONNX (preprocessing + threshold in its metadata) and check parity with PyTorch."""
    setup_logging()
    from dfdetect.runtime.detector import WEIGHTS_DIR, model_file
    from dfdetect.runtime.export import export_onnx

    source = model_file(checkpoint)
    # A shipped model's .onnx already sits in the package: never overwrite the installation by default.
    shipped = source.resolve().parent == WEIGHTS_DIR.resolve()
    target = out or (Path.cwd() / f"{source.stem}.onnx" if shipped else source.with_suffix(".onnx"))
    checkpoint = source
    try:
        res = export_onnx(checkpoint, target, opset=opset)
    except EXPECTED_ERRORS as e:
        fail(str(e))
    typer.echo(f"{res['path']}  (max |logit diff| vs PyTorch: {res['max_abs_diff']:.2e})")


def _register_verbs() -> None:
    # Each verb group lives in its own module with register(app); all ship in every build, so a missing
    # module is a broken install and raises. Their heavy imports stay inside the command functions.
    from dfdetect.cli import (
        benchmark,
        benchmark_train,
        compare,
        ensemble,
        explain,
        faces,
        forensics,
        robustness,
        serve,
        split,
    )

    for mod in (explain, forensics, serve, benchmark, compare, robustness, faces, ensemble, benchmark_train, split):
        mod.register(app)


_register_verbs()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
