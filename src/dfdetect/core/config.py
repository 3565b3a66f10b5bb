"""Typed settings for data, model and training, read from YAML/CLI and saved resolved with every run.

Plain dataclasses (not pydantic) keep checkpoints loadable with ``torch.load(weights_only=True)``:
every setting round-trips through ``to_dict``/``from_dict`` as str, int, float, bool, list or None.
Fields with a closed set of values are typed ``Literal`` and checked when a config is built (from the CLI, a
YAML file, ``compare`` or a checkpoint), so ``scheduler: cosin`` fails with the valid choices instead of running.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

Head = Literal["linear", "attention", "attnpool", "multiscale"]
Scheduler = Literal["plateau", "cosine"]


class _Checked:
    """Checks every ``Literal`` field (of nested configs too) against its choices: when built, and on ``validate``."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for name, hint in get_type_hints(type(self)).items():
            value = getattr(self, name)
            if isinstance(value, _Checked):
                value.validate()
            elif get_origin(hint) is Literal and value not in get_args(hint):
                choices = ", ".join(map(str, get_args(hint)))
                raise ValueError(f"{name} must be one of {choices}, not {value!r}")


@dataclass
class DataConfig(_Checked):
    root: str = ""
    """Data folder: ROOT/{real,fake}/** or the 140k layout (real_vs_fake/real-vs-fake/...)."""
    val_fraction: float = 0.15
    """Share of images held out for validation when the data has no given splits."""
    test_fraction: float = 0.15
    """Share of images held out for testing when the data has no given splits."""
    split_seed: int = 42
    """Seed of the stratified split, so the same manifest comes back on every run."""
    manifest: str | None = None
    """Existing split manifest (CSV) to reuse instead of making a new split."""
    limit_per_class: int | None = None
    """Use at most this many images per class and split (quick runs, tests)."""
    num_workers: int = 2
    """DataLoader worker processes for decoding."""
    cache: bool = False
    """Decode every image once into memory (uint8) so epochs do not re-decode JPEGs."""
    cache_dir: str | None = None
    """Folder of a pre-decoded uint8 image cache (images_{size}.npy, memory-mapped), shared by runs and ranks."""


@dataclass
class AugmentConfig(_Checked):
    rotation: float = 10.0
    """Max rotation in degrees (paper: rotation)."""
    scale: float = 0.1
    """Max relative zoom in/out (paper: scaling)."""
    hflip: float = 0.5
    """Probability of a horizontal flip (paper: flipping)."""
    jpeg_prob: float = 0.0
    """Probability of re-compressing the image as JPEG (robustness to social-media processing)."""
    jpeg_quality: list[int] = field(default_factory=lambda: [60, 95])
    """JPEG quality range for re-compression."""
    blur_prob: float = 0.0
    """Probability of a Gaussian blur."""
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 1.5])
    """Gaussian blur sigma range."""
    mixup: float = 0.0
    """MixUp alpha (0 = off): blends pairs of images and their labels."""
    cutmix: float = 0.0
    """CutMix alpha (0 = off): pastes a box from one image into another, labels mixed by area."""
    mix_prob: float = 0.5
    """Probability that a batch gets MixUp or CutMix (when either is on)."""
    random_crop: bool = True
    """Train on random crops of input_size from the image (native resolution) instead of resizing."""


@dataclass
class ModelConfig(_Checked):
    name: str = "efficientnet_lite0"
    """Backbone name from `dfdetect models` (the name table), or fusion:A+B (two-backbone fusion)."""
    weights: str = "none"
    """Initial weights: none (random), offline (ImageNet from pip packages), hub (timm download), or a path."""
    drop_rate: float = 0.2
    """Dropout before the dense classification layer."""
    img_size: int | None = None
    """Input size override (pixels); default is the backbone's own data config."""
    resize_to: int | None = None
    """Resize the shorter side to this before cropping; default = img_size (no cropping loss)."""
    head: Head = "linear"
    """Classifier head: linear (pooling + dense), attention (CBAM), attnpool (attention pooling) or multiscale."""
    freeze_backbone: bool = False
    """Keep the backbone (a fusion model's members) frozen for the whole run: every epoch trains the head only."""


@dataclass
class TrainConfig(_Checked):
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 10
    """Maximum fine-tuning epochs (after the warm-up)."""
    warmup_epochs: int = 1
    """Head-only epochs with the backbone frozen (transfer learning before fine-tuning)."""
    batch_size: int = 32
    """Images per optimisation step."""
    lr: float = 3e-4
    """AdamW learning rate for fine-tuning the whole network."""
    head_lr: float = 1e-3
    """AdamW learning rate for the head-only warm-up."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    ema: float = 0.0
    """Decay of an exponential moving average of the weights, evaluated and saved instead (0 = off)."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing."""
    teacher: list[str] = field(default_factory=list)
    """Knowledge distillation: trained checkpoints whose mean prediction the student also learns (none = off)."""
    distill_alpha: float = 0.5
    """With teachers: weight of the distillation loss; the label cross-entropy gets 1 - alpha."""
    distill_temperature: float = 1.0
    """With teachers: softmax temperature of the distillation loss."""
    teacher_amp: bool = True
    """With teachers: their forward passes in bf16 autocast where native (soft targets only; see ``amp``)."""
    scheduler: Scheduler = "plateau"
    """LR schedule: plateau (reduce on validation-loss plateau, as in the paper) or cosine."""
    plateau_factor: float = 0.5
    """LR multiplier when the validation loss stops improving."""
    plateau_patience: int = 1
    """Epochs without validation-loss improvement before the LR is reduced."""
    early_stopping: int = 5
    """Stop after this many epochs without a better validation AUC (0 = never)."""
    seed: int = 0
    """Seed for weights, augmentation and data order."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    amp: bool = True
    """bf16 autocast for training on CUDA and on CPUs with native bf16 (AVX-512 BF16, AMX); fp32 elsewhere."""
    channels_last: bool = True
    """channels-last memory format (CUDA and CPU: 2-3x faster CPU training steps than contiguous)."""
    sync_bn: bool = False
    """Under torchrun on CUDA: synchronise BatchNorm statistics across ranks (SyncBatchNorm)."""
    max_steps_per_epoch: int | None = None
    """Cap optimisation steps per epoch (quick runs, tests)."""
    out: str = "runs"
    """Parent folder of run folders."""
    name: str | None = None
    """Run folder name (default: model name + time)."""
    evaluate_test: bool = True
    """Evaluate the best checkpoint on the test split when training ends."""
    bootstrap: int = 1000
    """Bootstrap resamples for the test metrics' 95% confidence intervals."""
    threshold: str = "0.5"
    """Decision threshold stored in the checkpoint: a number, or 'eer'/'f1' chosen on validation."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def apply_overrides(self, values: dict[str, Any]) -> None:
        """Set fields from flat names, as CLI options name them (``lr``, ``jpeg_prob``, ``data``...): a name that
        is a field of exactly one section (or of the run) sets it, ``FLAG_ALIASES`` names the rest; None keeps the
        config's value. Unknown names raise, and the result is validated."""
        index = _field_index()
        for key, value in values.items():
            if value is None:
                continue
            path = FLAG_ALIASES.get(key) or index.get(key)
            if path is None:
                raise ValueError(f"{key!r} is not a training setting")
            section, _, field_name = path.rpartition(".")
            target = getattr(self, section) if section else self
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, (list, tuple)):
                value = [str(v) if isinstance(v, Path) else v for v in value]
            setattr(target, field_name, value)
        self.validate()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        sub = {"data": DataConfig, "model": ModelConfig, "augment": AugmentConfig}
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d.pop(f.name)
            kwargs[f.name] = _build(sub[f.name], v) if f.name in sub else v
        if d:
            raise ValueError(f"unknown config keys: {sorted(d)}")
        return cls(**kwargs)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load_yaml(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})


FLAG_ALIASES = {
    "data": "data.root",
    "model": "model.name",
    "name": "name",
    "resize": "model.resize_to",
    "workers": "data.num_workers",
    "max_steps": "max_steps_per_epoch",
}
"""CLI option names that are not a unique field name of the config."""


def _field_index() -> dict[str, str]:
    """Field name -> dotted path, for names that occur once across the run and its sections."""
    seen: dict[str, list[str]] = {}
    sections = {"data": DataConfig, "model": ModelConfig, "augment": AugmentConfig}
    for f in dataclasses.fields(TrainConfig):
        if f.name not in sections:
            seen.setdefault(f.name, []).append(f.name)
    for section, kind in sections.items():
        for f in dataclasses.fields(kind):
            seen.setdefault(f.name, []).append(f"{section}.{f.name}")
    return {name: paths[0] for name, paths in seen.items() if len(paths) == 1}


def _build(kind: type, values: dict[str, Any] | Any) -> Any:
    if isinstance(values, kind):
        return values
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {kind.__name__} keys: {sorted(unknown)}")
    return kind(**values)
