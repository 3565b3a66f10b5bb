"""Explain a verdict: Grad-CAM, Grad-CAM++, gradient saliency and the strongest last-stage activations.

``explain_image(detector, img)`` -> ``Explanation``: heat maps (H x W float32 in [0, 1]) at the ORIGINAL
image resolution, mapped back through the model's resize + centre-crop geometry (pixels the crop cut away
get 0), plus the top-k feature-activation maps of the last stage. ``Explanation.overlay`` and
``Explanation.panel`` render them. ``randomization_check`` is the model-parameter randomisation test of
Adebayo et al. (2018): a map that barely changes when the trained weights are replaced by random ones
says nothing about what the model learned.

What a map shows: where the network's evidence for the "fake" class (its fake logit) is concentrated for
this one image. What it does not show: why, nor that the region was manipulated. CAMs need gradients, so
they run on the torch backend only (never under ``inference_mode``/``no_grad``); the model is left in the
mode, and its parameters with the ``requires_grad`` flags and ``.grad`` tensors, it was found with.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dfdetect.core.labels import verdict
from dfdetect.data.io import open_image, to_rgb

log = logging.getLogger(__name__)

if importlib.util.find_spec("pytorch_grad_cam") is None:  # checked without importing torch
    raise ModuleNotFoundError(
        "explanations need the grad-cam package: pip install 'dfdetect[explain]'  (or: pip install grad-cam)",
        name="pytorch_grad_cam",
    )

METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "saliency", "activations")
"""Every map ``explain_image`` can compute, in panel order."""
FILE_KEYS: dict[str, str] = {
    "gradcam": "gradcam",
    "gradcam++": "gradcampp",
    "saliency": "saliency",
    "activations": "activations",
}
"""Method name -> the file-name / npz-key form (no '+')."""
_ALIASES = {
    "gradcampp": "gradcam++",
    "gradcam_pp": "gradcam++",
    "gradcamplusplus": "gradcam++",
    "smoothgrad": "saliency",
}
TITLES: dict[str, str] = {
    "gradcam": "Grad-CAM (fake)",
    "gradcam++": "Grad-CAM++ (fake)",
    "saliency": "gradient saliency",
    "activations": "last-stage activations",
}
COLORMAPS: dict[str, str] = {"gradcam": "jet", "gradcam++": "jet", "saliency": "inferno", "activations": "inferno"}
LEGEND = "Heat maps show where the network's evidence for 'fake' is concentrated; they do not prove manipulation."
FAKE = 1


def normalize_methods(methods: str | Sequence[str] | None) -> tuple[str, ...]:
    """Accept names or a comma-separated string (aliases: gradcampp, smoothgrad); keep METHODS order."""
    if methods is None:
        return METHODS
    if isinstance(methods, str):
        methods = [methods]
    wanted: set[str] = set()
    for item in methods:
        for raw in str(item).split(","):
            name = raw.strip().lower()
            if not name:
                continue
            if name == "all":
                wanted.update(METHODS)
                continue
            name = _ALIASES.get(name, name)
            if name not in METHODS:
                raise ValueError(f"unknown explanation method {raw.strip()!r}; choose from {', '.join(METHODS)}")
            wanted.add(name)
    if not wanted:
        raise ValueError(f"no explanation method given; choose from {', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in wanted)


@dataclass
class Explanation:
    """The maps for one image and the verdict they explain."""

    score: float
    """P(fake) in [0, 1]."""
    label: str
    """'fake' if score >= threshold else 'real'."""
    threshold: float
    model_id: str
    size: tuple[int, int]
    """(width, height) of the original image: every map in ``maps`` is (height, width)."""
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    """Method -> H x W float32 in [0, 1] at the original resolution (0 where the centre crop cut the image)."""
    input_maps: dict[str, np.ndarray] = field(default_factory=dict)
    """The same maps at the model's input resolution (size x size), before mapping back."""
    activations: np.ndarray | None = None
    """(k, h, w) float32 in [0, 1]: |activation| of the k strongest channels of the last stage, each scaled to max 1."""
    channels: list[int] = field(default_factory=list)
    """Channel indices of ``activations``, strongest (largest mean |activation|) first."""
    target_layer: str = ""
    smoothgrad_samples: int = 0

    @property
    def verdict(self) -> str:
        return self.label

    def overlay(self, name: str, img: Image.Image, alpha: float = 0.45, cmap: str | None = None) -> Image.Image:
        """The map ``name`` in a colormap (jet for CAMs, inferno otherwise) blended over ``img`` (RGB, its size)."""
        name = normalize_methods(name)[0]
        if name not in self.maps:
            raise KeyError(f"no {name!r} map in this explanation (computed: {', '.join(self.maps) or 'none'})")
        base = to_rgb(img)
        m = self.maps[name]
        if base.size != (m.shape[1], m.shape[0]):
            m = np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize(base.size, Image.Resampling.BILINEAR))
        heat = colorize(np.clip(m, 0.0, 1.0), cmap or COLORMAPS[name])
        out = (1.0 - alpha) * np.asarray(base, dtype=np.float32) + alpha * heat
        return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))

    def activation_grid(self, cmap: str = "inferno", cell: int = 64, pad: int = 2) -> Image.Image:
        """The top-k activation maps tiled in a near-square grid (strongest first), nearest-neighbour upscaled."""
        if self.activations is None or not len(self.activations):
            raise KeyError("no activations in this explanation")
        k = len(self.activations)
        cols = int(np.ceil(np.sqrt(k)))
        rows = int(np.ceil(k / cols))
        grid = np.full((rows * (cell + pad) + pad, cols * (cell + pad) + pad, 3), 255, dtype=np.uint8)
        for i, a in enumerate(self.activations):
            r, c = divmod(i, cols)
            tile = Image.fromarray(colorize(a, cmap).astype(np.uint8)).resize((cell, cell), Image.Resampling.NEAREST)
            y, x = pad + r * (cell + pad), pad + c * (cell + pad)
            grid[y : y + cell, x : x + cell] = np.asarray(tile)
        return Image.fromarray(grid)

    def title(self) -> str:
        return (
            f"{self.label.upper()}  -  P(fake) = {self.score:.3f}  (threshold {self.threshold:.3f})  -  "
            f"model {self.model_id}"
        )

    def panel(self, img: Image.Image, dpi: int = 100, panel_inches: float = 3.0) -> Image.Image:
        """Side by side: the original, then each computed map as an overlay, then the activation grid.

        The title carries the verdict, P(fake), threshold and model id; the legend says what the maps mean.
        """
        from matplotlib.figure import Figure

        base = to_rgb(img)
        tiles: list[tuple[str, Image.Image]] = [(f"original ({base.size[0]}x{base.size[1]})", base)]
        for name in METHODS:
            if name == "activations":
                continue
            if name in self.maps:
                sub = TITLES[name] + (
                    f", SmoothGrad n={self.smoothgrad_samples}"
                    if name == "saliency" and self.smoothgrad_samples
                    else ""
                )
                tiles.append((sub, self.overlay(name, base)))
        if self.activations is not None and len(self.activations):
            tiles.append((f"top-{len(self.activations)} activations ({self.target_layer})", self.activation_grid()))
        fig = Figure(figsize=(panel_inches * len(tiles), panel_inches + 0.9), dpi=dpi)
        for i, (sub, tile) in enumerate(tiles):
            ax = fig.add_subplot(1, len(tiles), i + 1)
            ax.imshow(tile)
            ax.set_title(sub, fontsize=9)
            ax.set_axis_off()
        color = "#b00020" if self.label == "fake" else "#1b5e20"
        fig.suptitle(self.title(), fontsize=11, color=color, fontweight="bold")
        fig.text(0.5, 0.02, LEGEND, ha="center", va="bottom", fontsize=8, style="italic")
        fig.subplots_adjust(left=0.01, right=0.99, top=0.80, bottom=0.10, wspace=0.05)
        return _figure_to_image(fig)

    def save(self, out_dir: str | Path, stem: str, img: Image.Image, panel: bool = True) -> list[Path]:
        """Write ``<stem>_<method>.png`` overlays, ``<stem>_maps.npz`` and ``<stem>_panel.png``; return the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for name in METHODS:
            if name in self.maps:
                p = out / f"{stem}_{FILE_KEYS[name]}.png"
                self.overlay(name, img).save(p)
                written.append(p)
        p = out / f"{stem}_maps.npz"
        np.savez_compressed(p, **self.arrays())
        written.append(p)
        if panel:
            p = out / f"{stem}_panel.png"
            self.panel(img).save(p)
            written.append(p)
        return written

    def arrays(self) -> dict[str, np.ndarray]:
        """The raw maps as arrays (the ``.npz`` content): one key per method, plus the activation channels."""
        arrs: dict[str, np.ndarray] = {FILE_KEYS[k]: v for k, v in self.maps.items()}
        arrs.update({f"input_{FILE_KEYS[k]}": v for k, v in self.input_maps.items()})
        if self.activations is not None:
            arrs["activation_channels"] = self.activations
            arrs["channel_indices"] = np.asarray(self.channels, dtype=np.int64)
        arrs["score"] = np.float64(self.score)
        arrs["threshold"] = np.float64(self.threshold)
        return arrs


def colorize(m: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """H x W in [0, 1] -> H x W x 3 float32 in [0, 255] through a matplotlib colormap."""
    import matplotlib

    rgba = matplotlib.colormaps[cmap](np.clip(m, 0.0, 1.0))
    return (rgba[..., :3] * 255.0).astype(np.float32)


def _figure_to_image(fig: Any) -> Image.Image:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


# ---- geometry: model input -> original image ---------------------------------------------------------
def crop_geometry(width: int, height: int, data_config: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """(resized_w, resized_h, left, top, size): what ``dfdetect.data.preprocess.resize_crop`` does to an image."""
    size = int(data_config["input_size"][-1])
    resize = int(data_config.get("resize", size))
    w, h = width, height
    if min(w, h) != resize:
        scale = resize / min(w, h)
        w, h = max(resize, round(w * scale)), max(resize, round(h * scale))
    return w, h, (w - size) // 2, (h - size) // 2, size


def _axis_weights(length: int, resized: int, offset: int, size: int, n_src: int) -> np.ndarray:
    """(length, n_src) bilinear weights taking a map of n_src cells spanning the size-pixel crop back to
    ``length`` original pixels; rows of pixels outside the crop are all zero."""
    x = np.arange(length, dtype=np.float64)
    p = (x + 0.5) * (resized / length) - offset  # position inside the crop, in model-input pixels
    inside = (p >= 0.0) & (p <= size)
    c = np.clip(p * (n_src / size) - 0.5, 0.0, n_src - 1.0)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_src - 1)
    f = c - i0
    wmat = np.zeros((length, n_src), dtype=np.float64)
    rows = np.arange(length)
    np.add.at(wmat, (rows, i0), 1.0 - f)
    np.add.at(wmat, (rows, i1), f)
    wmat[~inside] = 0.0
    return wmat


def to_original(m: np.ndarray, width: int, height: int, data_config: dict[str, Any]) -> np.ndarray:
    """A map over the model input (any h x w grid covering the crop) -> (height, width) float32 in [0, 1]."""
    rw, rh, left, top, size = crop_geometry(width, height, data_config)
    wy = _axis_weights(height, rh, top, size, m.shape[0])
    wx = _axis_weights(width, rw, left, size, m.shape[1])
    return np.clip(wy @ m.astype(np.float64) @ wx.T, 0.0, 1.0).astype(np.float32)


# ---- computing the maps ------------------------------------------------------------------------------
def target_layer_name(model: Any) -> str:
    """The last stage (``feature_info[-1]``) of a timm model: the Grad-CAM target layer."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{type(model).__name__} has no feature_info: cannot choose a Grad-CAM target layer")
    last = info[-1] if isinstance(info, (list, tuple)) else info.get_dicts()[-1]
    return str(last["module"])


@contextlib.contextmanager
def _model_state_kept(model: Any) -> Iterator[None]:
    """Gradients on for the block, parameters frozen (only input/activation gradients get computed: faster
    and no ``.grad`` writes); afterwards every module's mode, ``requires_grad`` and ``.grad`` are restored."""
    import torch

    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, flag, g in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = g
        for m, was in modes:
            m.training = was


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _input_tensor(detector: Any, img: Image.Image) -> Any:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(detector.preprocess(img)[None], dtype=np.float32))
    return x.to(detector.backend.device)


def _cams(model: Any, layer: Any, x: Any, methods: Sequence[str]) -> dict[str, np.ndarray]:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    out: dict[str, np.ndarray] = {}
    for name, cls in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus)):
        if name not in methods:
            continue
        maps = None
        with cls(model=model, target_layers=[layer]) as cam:
            maps = cam(input_tensor=x.detach().clone().requires_grad_(True), targets=[ClassifierOutputTarget(FAKE)])
        if maps is None:  # the CAM's __exit__ swallows IndexError (it only prints it)
            raise RuntimeError(f"{name} failed on layer {type(layer).__name__}")
        out[name] = np.clip(np.nan_to_num(maps[0].astype(np.float32)), 0.0, 1.0)
    return out


def _saliency(model: Any, x: Any, samples: int = 0, noise: float = 0.15, seed: int = 0, chunk: int = 8) -> np.ndarray:
    """|d fake-logit / d input|, max over colour channels; SmoothGrad (mean over noisy copies) when samples > 0.

    Clipped at the 99th percentile, then scaled to [0, 1] (a few extreme pixels would otherwise black out the rest).
    """
    import torch

    if samples > 0:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        sigma = noise * float(x.max() - x.min())
        total = torch.zeros_like(x[0])
        done = 0
        while done < samples:
            n = min(chunk, samples - done)
            eps = torch.randn((n, *x.shape[1:]), generator=gen).to(x.device) * sigma
            xb = (x.detach() + eps).requires_grad_(True)
            (g,) = torch.autograd.grad(model(xb)[:, FAKE].sum(), xb)
            total += g.abs().sum(0)
            done += n
        grad = total / samples
    else:
        xb = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xb)[:, FAKE].sum(), xb)
        grad = g[0].abs()
    sal = grad.max(dim=0).values.float().cpu().numpy()
    hi = float(np.percentile(sal, 99.0))
    if hi <= 0.0:
        hi = float(sal.max())
    return np.clip(sal / hi, 0.0, 1.0).astype(np.float32) if hi > 0.0 else np.zeros_like(sal, dtype=np.float32)


def _forward_with_activations(model: Any, layer: Any, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """One gradient-free forward: (logits (1, 2), the target layer's output (C, h, w))."""
    import torch

    store: list[Any] = []
    handle = layer.register_forward_hook(lambda _m, _i, o: store.append(o.detach()))
    try:
        with torch.no_grad():
            logits = model(x).float().cpu().numpy()
    finally:
        handle.remove()
    return logits, store[-1][0].float().cpu().numpy()


def _top_activations(feat: np.ndarray, k: int) -> tuple[np.ndarray, list[int], np.ndarray]:
    """(k, h, w) |activation| of the k channels with the largest mean |activation|, each scaled to max 1;
    their indices; and their mean, min-max scaled (the single 'activations' heat map)."""
    mag = np.abs(feat.astype(np.float32))
    k = max(1, min(k, mag.shape[0]))
    order = np.argsort(-mag.mean(axis=(1, 2)), kind="stable")[:k]
    top = mag[order]
    peak = top.reshape(k, -1).max(axis=1)[:, None, None]
    top = np.where(peak > 0, top / np.maximum(peak, 1e-12), 0.0).astype(np.float32)
    return top, [int(i) for i in order], _minmax(top.mean(axis=0))


def _input_maps(
    detector: Any, x: Any, methods: Sequence[str], smoothgrad_samples: int, top_k: int, seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray | None, list[int], np.ndarray | None, str]:
    """All maps at the model-input resolution: (logits, maps, top activations, channels, activation map, layer)."""
    model = detector.model
    layer_name = target_layer_name(model)
    layer = model.get_submodule(layer_name)
    with _model_state_kept(model):
        logits, feat = _forward_with_activations(model, layer, x)
        maps = _cams(model, layer, x, methods)
        if "saliency" in methods:
            maps["saliency"] = _saliency(model, x, smoothgrad_samples, seed=seed)
    acts, chans, act_map = (None, [], None)
    if "activations" in methods:
        acts, chans, act_map = _top_activations(feat, top_k)
    return logits, maps, acts, chans, act_map, layer_name


def explain_refusal(detector: Any) -> str | None:
    """Why this detector cannot be explained (one line, said before any image is read), or None."""
    if str(getattr(detector, "arch", "")).startswith("ensemble"):
        return (
            "explain does not take an ensemble (its members see differently framed inputs): explain each member "
            "checkpoint instead, e.g. dfdetect explain IMAGE --model MEMBER.pt"
        )
    return None


def explain_image(
    detector: Any,
    img: Image.Image | str | Path | bytes,
    methods: str | Sequence[str] = METHODS,
    smoothgrad_samples: int = 0,
    top_k: int = 9,
    seed: int = 0,
) -> Explanation:
    """Explain the detector's verdict on one image (any PIL mode, or a path / encoded bytes).

    ``methods``: any of gradcam, gradcam++, saliency, activations. ``smoothgrad_samples`` > 0 turns the
    vanilla gradient saliency into SmoothGrad with that many noisy copies (noise 15% of the input range).
    ``top_k``: how many last-stage channels to keep. Needs the torch backend.
    """
    from dfdetect.core.scores import softmax_fake

    if (why := explain_refusal(detector)) is not None:
        raise ValueError(why)
    wanted = normalize_methods(methods)
    if not isinstance(img, Image.Image):
        img = open_image(img)
    img = to_rgb(img)
    x = _input_tensor(detector, img)
    logits, imaps, acts, chans, act_map, layer_name = _input_maps(
        detector, x, wanted, int(smoothgrad_samples), int(top_k), seed
    )
    if act_map is not None:
        size = int(x.shape[-1])
        imaps["activations"] = to_original(act_map, size, size, {"input_size": [3, size, size], "resize": size})
    score = float(softmax_fake(logits)[0])
    w, h = img.size
    maps = {k: to_original(imaps[k], w, h, detector.data_config) for k in wanted if k in imaps}
    thr = float(detector.threshold)
    log.debug("explained %dx%d image: P(fake)=%.4f, maps %s", w, h, score, ", ".join(maps))
    return Explanation(
        score=score,
        label=verdict(score, thr),
        threshold=thr,
        model_id=str(detector.model_id),
        size=(w, h),
        maps=maps,
        input_maps={k: imaps[k] for k in wanted if k in imaps},
        activations=acts,
        channels=chans,
        target_layer=layer_name,
        smoothgrad_samples=int(smoothgrad_samples) if "saliency" in wanted else 0,
    )


# ---- the randomisation sanity check (Adebayo et al., 2018) ---------------------------------------------
def randomized_model(detector: Any, seed: int = 0) -> Any:
    """The detector's architecture with random weights (timm's own init when the arch is in the name table,
    else a copy with every layer's ``reset_parameters``), in eval mode on the detector's device."""
    import torch

    model = detector.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rand = None
        try:
            from dfdetect.models.factory import create_model

            cand = create_model(detector.arch, drop_rate=0.0)
            ref = model.state_dict()
            got = cand.state_dict()
            if set(ref) == set(got) and all(ref[k].shape == got[k].shape for k in ref):
                rand = cand
        except Exception as e:  # noqa: BLE001 - any failure here just means: use the generic fallback
            log.debug("randomized_model: create_model(%r) failed (%s); resetting a copy instead", detector.arch, e)
        if rand is None:
            rand = copy.deepcopy(model)
            for m in rand.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    rand = rand.to(detector.backend.device).eval()
    if all(torch.equal(a.to(b.device), b) for a, b in zip(rand.parameters(), model.parameters())):
        # The "trained" model is itself this seed's random init (an untrained model in a test): reseed.
        return randomized_model(detector, seed + 1)
    return rand


def _ranks(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a.ravel()).astype(np.float64)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.ravel().astype(np.float64) - a.mean()
    b = b.ravel().astype(np.float64) - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else 0.0


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Mean structural similarity of two maps in [0, 1] (uniform window, data range 1)."""
    from scipy.ndimage import uniform_filter

    a = a.astype(np.float64)
    b = b.astype(np.float64)
    win = max(1, min(window, *a.shape))
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = uniform_filter(a, win), uniform_filter(b, win)
    va = uniform_filter(a * a, win) - mu_a**2
    vb = uniform_filter(b * b, win) - mu_b**2
    cov = uniform_filter(a * b, win) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(np.mean(s))


def similarity(a: np.ndarray, b: np.ndarray) -> dict[str, float | bool]:
    """Spearman rank correlation, Pearson correlation and SSIM of two maps of one shape.

    A constant map has no ranking: its correlations are reported as 0.0 with ``degenerate`` set.
    """
    degenerate = bool(np.ptp(a) == 0 or np.ptp(b) == 0)
    return {
        "spearman": 0.0 if degenerate else _pearson(_ranks(a), _ranks(b)),
        "pearson": 0.0 if degenerate else _pearson(a, b),
        "ssim": ssim(a, b),
        "degenerate": degenerate,
    }


def randomization_check(
    detector: Any,
    img: Image.Image | str | Path | bytes,
    methods: str | Sequence[str] = ("gradcam", "saliency"),
    seed: int = 1234,
    random_model: Any = None,
) -> dict[str, Any]:
    """Model-parameter randomisation test: the trained model's maps vs the same architecture's with random weights.

    Returns ``{"methods": {method: {"spearman", "pearson", "ssim", "degenerate"}}, "score_trained",
    "score_random", "seed"}``, all compared at the model-input resolution. Similarities near 1 would mean the
    map hardly depends on what the model learned (an edge detector, not an explanation); a useful map scores
    clearly lower. ``random_model``: reuse one from ``randomized_model`` across images (else built here).
    """
    from dfdetect.core.scores import softmax_fake
    from dfdetect.runtime.detector import Detector, TorchBackend

    wanted = tuple(m for m in normalize_methods(methods) if m != "activations") or ("gradcam",)
    if not isinstance(img, Image.Image):
        img = open_image(img)
    img = to_rgb(img)
    rand = randomized_model(detector, seed) if random_model is None else random_model
    rdet = Detector(
        TorchBackend(rand, detector.backend.device),
        detector.data_config,
        detector.threshold,
        "random-weights",
        detector.arch,
    )
    x = _input_tensor(detector, img)
    lt, mt, *_ = _input_maps(detector, x, wanted, 0, 1, seed)
    lr, mr, *_ = _input_maps(rdet, x, wanted, 0, 1, seed)
    return {
        "methods": {m: similarity(mt[m], mr[m]) for m in wanted},
        "score_trained": float(softmax_fake(lt)[0]),
        "score_random": float(softmax_fake(lr)[0]),
        "seed": seed,
    }


def format_sanity(res: dict[str, Any]) -> str:
    """One line per method, for the CLI."""
    parts = []
    for m, s in res["methods"].items():
        flag = " (a map is constant)" if s["degenerate"] else ""
        parts.append(
            f"{TITLES[m]}: Spearman {s['spearman']:+.3f}, Pearson {s['pearson']:+.3f}, SSIM {s['ssim']:.3f}{flag}"
        )
    return "sanity (trained vs random weights; lower = the map depends on what was learned): " + "; ".join(parts)


# ---- face mode -----------------------------------------------------------------------------------------
@dataclass
class FaceExplanation:
    """Face mode: one ``Explanation`` per detected face crop, plus the face-mode result (boxes, scores, the
    deciding face) and an overview of the whole photo. With no face found, ``explanations`` holds one
    explanation of the whole image and ``result.faces`` is empty (a warning says so)."""

    result: Any
    """The ``dfdetect.faces.FaceResult`` (per-face boxes and scores; the most suspicious face decides)."""
    explanations: list[Explanation]
    crops: list[Image.Image]
    """The training-framed crops that were explained (the whole image when no face was found)."""
    overview: Image.Image

    def save(self, out_dir: str | Path, stem: str, panel: bool = True) -> list[Path]:
        """``<stem>_faces.png`` (overview) and, per face i (1-based, as in ``decided_by`` and on the overview),
        ``<stem>_face<i>_<method>.png``, ``<stem>_face<i>_maps.npz`` and ``<stem>_face<i>_panel.png``; the
        whole-image names when no face was found."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        p = out / f"{stem}_faces.png"
        self.overview.save(p)
        written = [p]
        if not self.result.faces:
            return written + self.explanations[0].save(out, stem, self.crops[0], panel=panel)
        for i, (exp, crop) in enumerate(zip(self.explanations, self.crops), 1):
            written += exp.save(out, f"{stem}_face{i}", crop, panel=panel)
        return written

    def summary(self) -> str:
        r = self.result
        lines = [f"{r.label}  P(fake)={r.score:.4f}  (face mode; decided by {r.decided_by})"]
        for i, f in enumerate(r.faces):
            mark = "  <- decides" if i == r.decided else ""
            lines.append(f"  face {i + 1}  box {list(f.box)}  P(fake)={f.score:.4f}  aligned={f.aligned}{mark}")
        lines += [f"  warning: {w}" for w in r.warnings]
        return "\n".join(lines)


def explain_faces(
    detector: Any,
    img: Image.Image | str | Path | bytes,
    methods: str | Sequence[str] = METHODS,
    smoothgrad_samples: int = 0,
    top_k: int = 9,
    seed: int = 0,
    min_face: int = 40,
    align: bool = True,
) -> FaceExplanation:
    """Face mode of ``explain_image``: find the faces (``dfdetect.faces``), explain each training-framed crop,
    and draw the overview (boxes, P(fake), the deciding face marked). Needs OpenCV (``dfdetect[faces]``)."""
    from dfdetect.faces import draw_faces
    from dfdetect.runtime.pipeline import predict_faces

    if not isinstance(img, Image.Image):
        img = open_image(img)
    img = to_rgb(img)
    r = predict_faces(detector, img, min_face=min_face, align=align)
    crops = r.crops if r.faces else [img]
    exps = [explain_image(detector, c, methods, smoothgrad_samples, top_k, seed) for c in crops]
    return FaceExplanation(r, exps, crops, draw_faces(img, r))
