"""Explanations: map shapes and ranges at the original resolution, crop geometry, model state left alone,
the CLI's files and exit codes, a second architecture, and the randomisation sanity check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dfdetect.analysis.explain import (
    LEGEND,
    METHODS,
    Explanation,
    crop_geometry,
    explain_image,
    normalize_methods,
    randomization_check,
    similarity,
    to_original,
)
from dfdetect.cli import app
from dfdetect.models.factory import create_model, data_config_for
from dfdetect.runtime.detector import Detector, TorchBackend

runner = CliRunner()
FILES = ("gradcam", "gradcampp", "saliency", "activations", "maps.npz", "panel")


@pytest.fixture(scope="module")
def detector(tiny_run):
    return Detector.load(tiny_run / "best.pt", device="cpu", backend="torch")


@pytest.fixture(scope="module")
def odd_image(tiny_data) -> Image.Image:
    """A non-square 70 x 50 crop of a real test image."""
    src = sorted((tiny_data / "fake").glob("fake_*.jpg"))[0]
    return Image.open(src).convert("RGB").resize((70, 50), Image.Resampling.BICUBIC)


def _mobilenet_detector(img_size: int = 64, resize: int | None = None) -> Detector:
    torch.manual_seed(0)
    model = create_model("tiny_mobilenetv3")
    cfg = data_config_for(model, img_size, resize)
    return Detector(TorchBackend(model, "cpu"), cfg, 0.5, "test", "tiny_mobilenetv3")


def _check_maps(exp: Explanation, w: int, h: int, methods=METHODS) -> None:
    assert set(exp.maps) == set(methods)
    for name, m in exp.maps.items():
        assert m.shape == (h, w), name
        assert m.dtype == np.float32, name
        assert np.isfinite(m).all(), name
        assert m.min() >= 0.0 and m.max() <= 1.0, name
    assert 0.0 <= exp.score <= 1.0
    assert exp.label == ("fake" if exp.score >= exp.threshold else "real")


def test_maps_at_original_resolution(detector, odd_image):
    exp = explain_image(detector, odd_image)
    _check_maps(exp, 70, 50)
    size = detector.data_config["input_size"][-1]
    for m in exp.input_maps.values():
        assert m.shape == (size, size)
    k, fh, fw = exp.activations.shape
    assert 1 <= k <= 9 and fh >= 1 and fw >= 1 and len(exp.channels) == k
    assert exp.activations.min() >= 0.0 and exp.activations.max() <= 1.0
    assert np.isclose(exp.activations.reshape(k, -1).max(axis=1), 1.0).all() or exp.activations.max() == 0.0
    # The score is the one `predict` gives.
    assert exp.score == pytest.approx(detector.score_image(odd_image), abs=1e-5)


def test_centre_crop_geometry_maps_back():
    cfg = {"input_size": [3, 48, 48], "resize": 64, "crop_pct": 0.75, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert crop_geometry(100, 50, cfg) == (128, 64, 40, 8, 48)
    full = to_original(np.ones((6, 6), np.float32), 100, 50, cfg)
    assert full.shape == (50, 100)
    # The model saw x in [40, 88) of the 128-wide resize, i.e. x in [31.25, 68.75) of the original.
    cols = np.flatnonzero(full[25] > 0)
    assert cols.min() == 31 and cols.max() == 68
    rows = np.flatnonzero(full[:, 50] > 0)
    assert rows.min() == 6 and rows.max() == 43  # y in [8, 56) of 64 -> [6.25, 43.75) of the original
    assert np.allclose(full[10:40, 35:65], 1.0)
    # A horizontal ramp stays monotone after mapping back.
    ramp = np.tile(np.linspace(0, 1, 48, dtype=np.float32), (48, 1))
    row = to_original(ramp, 100, 50, cfg)[25, 32:68]
    assert (np.diff(row) >= -1e-6).all() and row[-1] > row[0]


def test_model_state_untouched(detector, odd_image):
    model = detector.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    assert not model.training
    explain_image(detector, odd_image, smoothgrad_samples=3)
    assert not model.training and not any(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(g is h for g, h in zip(grads, [p.grad for p in model.parameters()]))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    # A model left in train mode with some frozen parameters comes back exactly so.
    model.train()
    first = next(model.parameters())
    first.requires_grad_(False)
    try:
        explain_image(detector, odd_image, methods="gradcam")
        assert model.training and all(m.training for m in model.modules())
        assert not first.requires_grad
    finally:
        first.requires_grad_(True)
        model.eval()


def test_explain_works_when_called_under_inference_mode(detector, odd_image):
    with torch.inference_mode():
        exp = explain_image(detector, odd_image, methods=["gradcam", "saliency"])
    _check_maps(exp, 70, 50, ("gradcam", "saliency"))


def test_methods_subset_smoothgrad_and_rendering(detector, odd_image):
    exp = explain_image(detector, odd_image, methods="gradcam++,smoothgrad", smoothgrad_samples=4)
    _check_maps(exp, 70, 50, ("gradcam++", "saliency"))
    assert exp.activations is None and exp.smoothgrad_samples == 4
    ov = exp.overlay("gradcampp", odd_image)
    assert ov.size == (70, 50) and ov.mode == "RGB"
    panel = exp.panel(odd_image)
    assert panel.mode == "RGB" and panel.size[0] > panel.size[1]
    # The web API renders on a thumbnail: a smaller copy of the image works too.
    small = odd_image.resize((35, 25))
    assert exp.overlay("gradcam++", small).size == (35, 25)
    assert exp.panel(small).mode == "RGB"
    with pytest.raises(KeyError):
        exp.overlay("gradcam", odd_image)
    with pytest.raises(ValueError, match="unknown explanation method"):
        normalize_methods("gradcamm")
    assert "do not prove manipulation" in LEGEND


def test_second_architecture_with_centre_crop(odd_image):
    det = _mobilenet_detector(64, 80)  # crop_pct 0.8: the border the crop cuts gets no heat
    img = odd_image.resize((96, 64))
    exp = explain_image(det, img, smoothgrad_samples=2)
    _check_maps(exp, 96, 64)
    rw, rh, left, top, size = crop_geometry(96, 64, det.data_config)
    x0 = int(np.floor(left * 96 / rw))
    for m in exp.maps.values():
        assert m[:, :x0].max() == 0.0 and m[:, -x0:].max() == 0.0
    assert exp.target_layer == det.model.feature_info[-1]["module"]


def test_onnx_detector_is_refused(odd_image):
    class _FakeOnnx:
        name = "onnxruntime"
        device = "cpu"

    det = Detector(_FakeOnnx(), {"input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.5] * 3})
    with pytest.raises(RuntimeError, match="runs on onnxruntime, which has no torch model.*backend=.torch."):
        explain_image(det, odd_image)


def test_randomization_sanity_check(detector, odd_image):
    res = randomization_check(detector, odd_image)
    assert set(res["methods"]) == {"gradcam", "saliency"}
    for sims in res["methods"].values():
        for key in ("spearman", "pearson", "ssim"):
            assert np.isfinite(sims[key]) and -1.0 - 1e-9 <= sims[key] <= 1.0 + 1e-9
        # Trained and random weights do not give the same map.
        assert min(sims["spearman"], sims["ssim"]) < 0.999
    assert 0.0 <= res["score_trained"] <= 1.0 and 0.0 <= res["score_random"] <= 1.0
    # The detector itself is untouched by the check.
    assert res["score_trained"] == pytest.approx(detector.score_image(odd_image), abs=1e-5)


def test_randomization_check_untrained_model_reseeds(odd_image):
    det = _mobilenet_detector(64)
    res = randomization_check(det, odd_image, methods="gradcam")
    s = res["methods"]["gradcam"]
    assert np.isfinite([s["spearman"], s["pearson"], s["ssim"]]).all()


def test_similarity_measures():
    rng = np.random.default_rng(0)
    a = rng.random((16, 16)).astype(np.float32)
    same = similarity(a, a)
    assert same["spearman"] == pytest.approx(1.0) and same["ssim"] == pytest.approx(1.0)
    assert similarity(a, 1.0 - a)["spearman"] == pytest.approx(-1.0)
    flat = similarity(a, np.zeros_like(a))
    assert flat["degenerate"] and flat["spearman"] == 0.0 and np.isfinite(flat["ssim"])


def test_cli_writes_files_and_skips_bad(tiny_run, tiny_data, tmp_path):
    good = sorted((tiny_data / "real").glob("real_*.jpg"))[:2]
    bad = tiny_data / "real" / "corrupt.jpg"
    out = tmp_path / "out"
    r = runner.invoke(
        app, ["explain", *map(str, good), str(bad), "--out", str(out), "--model", str(tiny_run / "best.pt"), "--sanity"]
    )
    assert r.exit_code == 0, r.output
    assert "corrupt.jpg" in r.output and "2 explained, 1 failed, 0 skipped" in r.output
    assert "Spearman" in r.output
    for g in good:
        assert str(g) in r.output
        for suffix in FILES:
            name = f"{g.stem}_{suffix}" if suffix.endswith(".npz") else f"{g.stem}_{suffix}.png"
            assert (out / name).is_file(), name
        with Image.open(out / f"{g.stem}_gradcam.png") as im, Image.open(g) as orig:
            assert im.size == orig.size
        with np.load(out / f"{g.stem}_maps.npz") as z:
            assert z["gradcam"].shape == orig.size[::-1]
            assert {"gradcam", "gradcampp", "saliency", "activations", "activation_channels"} <= set(z.files)
            assert 0.0 <= float(z["score"]) <= 1.0


def test_cli_methods_and_exit_codes(tiny_run, tiny_data, tmp_path):
    ckpt = str(tiny_run / "best.pt")
    img = sorted((tiny_data / "fake").glob("fake_*.jpg"))[0]
    r = runner.invoke(app, ["explain", str(img), "--out", str(tmp_path / "a"), "-m", ckpt, "--methods", "gradcam"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        f"{img.stem}_{s}" for s in ("gradcam.png", "maps.npz", "panel.png")
    )
    # Only unreadable files: exit 1.
    bad = [str(tiny_data / "real" / "corrupt.jpg"), str(tiny_data / "fake" / "empty.jpg")]
    r = runner.invoke(app, ["explain", *bad, "--out", str(tmp_path / "b"), "-m", ckpt])
    assert r.exit_code == 1
    # A missing path: exit 2.
    r = runner.invoke(app, ["explain", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "c"), "-m", ckpt])
    assert r.exit_code == 2 and "nope.jpg" in r.output
    r = runner.invoke(app, ["explain", str(img), "--out", str(tmp_path / "d"), "-m", ckpt, "--methods", "cam"])
    assert r.exit_code == 2 and "unknown explanation method" in r.output


def test_cli_missing_default_model(tiny_data, tmp_path, monkeypatch):
    import dfdetect.runtime.detector

    monkeypatch.setattr(dfdetect.runtime.detector, "WEIGHTS_DIR", tmp_path)  # an installation without weights
    img = sorted((tiny_data / "fake").glob("fake_*.jpg"))[0]
    r = runner.invoke(app, ["explain", str(img), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--model" in r.output


@pytest.mark.slow
def test_inception_resnet_v2_at_299(odd_image):
    torch.manual_seed(0)
    model = create_model("inception_resnet_v2")
    cfg = data_config_for(model, 299)
    assert cfg["mean"] == [0.5, 0.5, 0.5]
    det = Detector(TorchBackend(model, "cpu"), cfg, 0.5, "test", "inception_resnet_v2")
    img = odd_image.resize((320, 240))
    _check_maps(explain_image(det, img), 320, 240)


def _group_photo(path) -> None:
    """Two training crops pasted at 280 px into a 1280x640 noise canvas (saved as JPEG at ``path``)."""
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    img = Image.fromarray(np.random.default_rng(1).normal(128, 20, (640, 1280, 3)).clip(0, 255).astype(np.uint8))
    for name, at in (("fake/0H9IEK046U.jpg", (120, 150)), ("real/00712.jpg", (800, 200))):
        img.paste(Image.open(examples / name).convert("RGB").resize((280, 280), Image.Resampling.LANCZOS), at)
    img.save(path, quality=92)


def test_cli_face_mode_one_panel_per_face_and_overview(tiny_run, tmp_path):
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "CascadeClassifier"):
        pytest.skip("OpenCV without Haar cascades")
    _group_photo(tmp_path / "group.jpg")
    out = tmp_path / "out"
    args = ["explain", str(tmp_path / "group.jpg"), "--out", str(out), "--model", str(tiny_run / "best.pt")]
    r = runner.invoke(app, [*args, "--methods", "gradcam"])  # auto: 1280x640 is not square
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    assert {"group_faces.png", "group_face1_panel.png", "group_face2_panel.png"} <= names, names
    assert "group_face3_panel.png" not in names and "group_face0_panel.png" not in names
    assert "group_panel.png" not in names
    assert "decided by max of 2 face(s)" in r.output and "<- decides" in r.output
    assert Image.open(out / "group_faces.png").size == (1280, 640)
    out2 = tmp_path / "out2"
    r = runner.invoke(app, [*args[:3], str(out2), *args[4:], "--methods", "gradcam", "--no-faces"])
    assert r.exit_code == 0 and (out2 / "group_panel.png").is_file() and not (out2 / "group_faces.png").exists()


def test_cli_says_what_predict_says_about_a_folder(tiny_run, tmp_path):
    """The pipeline's warnings and skipped entries, not a bare verdict (a tiny image, a directory named x.jpg)."""
    folder = tmp_path / "in"
    (folder / "x.jpg").mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / "t.png")
    r = runner.invoke(app, ["explain", str(folder), "--out", str(tmp_path / "o"), "--model", str(tiny_run / "best.pt")])
    assert r.exit_code == 0, r.output
    assert "warning: image is 12x12 px" in r.output and "a directory named like an image" in r.output
    assert "1 explained, 0 failed, 1 skipped" in r.output
