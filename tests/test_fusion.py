"""Attention / attention-pooling / multi-scale heads, checkpoint round trips, and ensembles on tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dfdetect.analysis.explain import explain_image
from dfdetect.models.factory import create_model, data_config_for, freeze_backbone, model_from_checkpoint

from .conftest import tiny_config

HEADS = ["attention", "attnpool", "multiscale"]


@pytest.mark.parametrize("head", HEADS)
def test_head_shapes_gradients_and_surface(head):
    torch.manual_seed(0)
    model = create_model("tiny_efficientnet", head=head)
    x = torch.randn(2, 3, 48, 48)
    logits = model(x)
    assert logits.shape == (2, 2)
    logits.sum().backward()
    head_params = dict(model.get_classifier().named_parameters())
    assert head_params and all(p.grad is not None for p in head_params.values())
    # attnpool's score bias shifts every position's score alike, and a softmax is shift-invariant: its gradient is
    # zero up to rounding (exactly 0.0 on some CPUs), so it is the one parameter not asked to have one.
    learning = {n: p for n, p in head_params.items() if n != "score.bias"}
    assert all(p.grad.abs().sum() > 0 for p in learning.values()), [n for n, p in learning.items() if not p.grad.any()]
    feats = model.forward_features(x)
    assert feats.ndim == 4 and model.forward_head(feats).shape == (2, 2)
    # Grad-CAM's target layer lookup and the head-only warm-up still work on the wrapper.
    from dfdetect.analysis.explain import target_layer_name

    assert model.get_submodule(model.feature_info[-1]["module"]) is model.get_submodule(target_layer_name(model))
    freeze_backbone(model, True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)
    assert data_config_for(model, 48)["input_size"] == [3, 48, 48]


def test_multiscale_concatenates_stages():
    model = create_model("tiny_mobilenetv3", head="multiscale")
    chs = [d["num_chs"] for d in model.feature_info[-3:-1]]
    assert model.head.fc.in_features == sum(chs) + model.num_features
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 2)


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="attention"):
        create_model("tiny_efficientnet", head="transformer")


@pytest.fixture(scope="module")
def attention_run(tiny_data, tmp_path_factory) -> Path:
    from dfdetect.engine.train import fit

    cfg = tiny_config(tiny_data, tmp_path_factory.mktemp("fusion"), epochs=1, warmup_epochs=1, evaluate_test=False)
    cfg.model.head = "attention"
    return fit(cfg)


def _files(data: Path) -> list[Path]:
    from dfdetect.runtime.detector import expand_paths

    return [p for p in expand_paths([data])[0] if p.stat().st_size > 100][:6]


def test_attention_checkpoint_round_trip(attention_run, tiny_data):
    from dfdetect.data.io import open_image
    from dfdetect.data.preprocess import preprocess
    from dfdetect.models.checkpoint import load_checkpoint
    from dfdetect.runtime.detector import Detector

    ckpt = load_checkpoint(attention_run / "best.pt")
    assert ckpt["config"]["model"]["head"] == "attention"
    model = create_model("tiny_efficientnet", drop_rate=0.0, head="attention")
    model.load_state_dict(ckpt["model"])
    model.eval()
    files = _files(tiny_data)
    batch = np.stack([preprocess(open_image(f), ckpt["data_config"]) for f in files])
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(batch)), 1)[:, 1].numpy()
    det = Detector.load(attention_run / "best.pt", device="cpu")
    got = [p.score for p in det.predict(files, workers=0)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert det.model.get_submodule(det.model.feature_info[-1]["module"]) is not None


@pytest.fixture(scope="module")
def members(attention_run) -> list[Path]:
    """The trained attention run + a second member (another backbone, head and input size) on the same split."""
    from dfdetect.data.datasets import manifest_hash
    from dfdetect.models.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(1)
    m = create_model("tiny_mobilenetv3", head="attnpool")
    first = load_checkpoint(attention_run / "best.pt")
    second = {
        "arch": "tiny_mobilenetv3",
        "classes": ["real", "fake"],
        "data_config": data_config_for(m, 40, 44),
        "model": m.state_dict(),
        "config": {"model": {"head": "attnpool"}},
        "split_sha256": manifest_hash(attention_run / "split.csv"),
        "threshold": 0.5,
    }
    assert first["split_sha256"] == second["split_sha256"]
    path = attention_run.parent / "second.pt"
    save_checkpoint(second, path)
    return [attention_run / "best.pt", path]


def _member_scores(paths: list[Path], files: list[Path]) -> np.ndarray:
    from dfdetect.data.io import open_image
    from dfdetect.runtime.detector import Detector

    dets = [Detector.load(p, device="cpu") for p in paths]
    return np.array([[d.score_image(open_image(f)) for d in dets] for f in files])


@pytest.mark.parametrize("method", ["mean", "weighted", "stacking"])
def test_ensemble_scores_equal_hand_combination(members, tiny_data, tmp_path, method):
    from dfdetect.data.io import open_image
    from dfdetect.engine.ensemble import build_ensemble
    from dfdetect.models.checkpoint import load_checkpoint
    from dfdetect.models.ensemble import EnsembleModel
    from dfdetect.runtime.detector import Detector

    out = tmp_path / "ensemble.pt"
    res = build_ensemble(members, tiny_data, out, method, members[0].parent / "split.csv", device="cpu", workers=0)
    ckpt = load_checkpoint(out)
    assert ckpt["kind"] == "ensemble" and ckpt["method"] == method and len(ckpt["members"]) == 2
    assert (out.parent / ckpt["members"][1]["path"]).resolve() == members[1].resolve()
    assert isinstance(model_from_checkpoint(ckpt), EnsembleModel)
    files = _files(tiny_data)
    p = _member_scores(members, files)
    w = np.asarray(res["weights"])
    if method == "mean":
        want = p.mean(1)
    elif method == "weighted":
        assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
        want = p @ w
    else:
        z = np.log(p) - np.log1p(-p)
        want = 1 / (1 + np.exp(-(res["intercept"] + z @ w)))
    det = Detector.load(out, device="cpu")
    got = np.array([det.score_image(open_image(f)) for f in files])
    np.testing.assert_allclose(got, want, atol=1e-5)
    preds = det.predict(files, workers=2)
    np.testing.assert_allclose([q.score for q in preds], want, atol=1e-5)
    assert all(q.label in ("real", "fake") for q in preds)


def test_stacking_fits_on_validation_only(members, tiny_data, tmp_path):
    from dfdetect.data.datasets import read_manifest
    from dfdetect.engine.ensemble import build_ensemble, fit_stacker, member_valid_scores
    from dfdetect.models.checkpoint import load_checkpoint

    manifest = members[0].parent / "split.csv"
    out = tmp_path / "stack.pt"
    build_ensemble(members, tiny_data, out, "stacking", manifest, device="cpu", workers=0)
    ckpt = load_checkpoint(out)
    valid = [it for it in read_manifest(manifest) if it.split == "valid"]
    cols, labels = [], None
    for m in members:
        labels, s, _ = member_valid_scores(load_checkpoint(m), tiny_data, valid, torch.device("cpu"), 8, 0)
        cols.append(s)
    coef, intercept = fit_stacker(np.stack(cols, 1), labels)
    assert ckpt["fit"]["split"] == "valid" and ckpt["fit"]["n"] == len(labels)
    np.testing.assert_allclose(ckpt["weights"], coef, rtol=1e-6)
    assert ckpt["intercept"] == pytest.approx(intercept)


def test_ensemble_cli_then_evaluate_and_predict(members, tiny_data, tmp_path):
    from typer.testing import CliRunner

    from dfdetect.cli import app

    out = tmp_path / "ens.pt"
    manifest = members[0].parent / "split.csv"
    runner = CliRunner()
    r = runner.invoke(
        app, ["ensemble", *map(str, members), "-d", str(tiny_data), "-o", str(out), "--manifest", str(manifest)]
    )
    assert r.exit_code == 0, r.output
    from dfdetect.engine.evaluate import evaluate_checkpoint

    m = evaluate_checkpoint(out, tiny_data, tmp_path / "eval", "test", manifest, device="cpu", workers=0, n_boot=20)
    assert m["n"] > 0 and 0.0 <= m["roc_auc"] <= 1.0
    r = runner.invoke(app, ["predict", str(_files(tiny_data)[0]), "--model", str(out), "--json", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert '"score"' in r.output
    # One ONNX graph cannot hold members with different preprocessing: export refuses, naming the fix.
    r = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "ens.onnx")])
    assert r.exit_code == 2 and "ensemble" in r.output and not (tmp_path / "ens.onnx").exists()
    # benchmark times one network: it names the command that times an ensemble's members
    r = runner.invoke(app, ["benchmark", str(out), "--batch-sizes", "1", "--min-seconds", "0.01"])
    assert r.exit_code == 2 and "compare" in r.output
    # explain refuses an ensemble once, up front, naming what to do instead (not once per file, no traceback)
    files = [str(f) for f in _files(tiny_data)[:3]]
    r = runner.invoke(app, ["explain", *files, "--model", str(out), "--out", str(tmp_path / "x")])
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and len(errors) == 1 and "explain each member" in errors[0], r.output
    assert "Traceback" not in r.output and not (tmp_path / "x").exists()


# ---- two-backbone fusion ---------------------------------------------------------------------------------------
FUSION = "fusion:tiny_efficientnet@48+tiny_mobilenetv3@40"


def _member_cfgs() -> list[dict]:
    a = {"input_size": [3, 48, 48], "resize": 48, "interpolation": "bicubic", "mean": [0.5] * 3, "std": [0.5] * 3}
    b = {
        "input_size": [3, 32, 32],
        "resize": 40,
        "interpolation": "bilinear",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    return [a, b]


def test_fusion_name_table():
    from dfdetect.models.registry import UnknownModelError, get_spec, parse_fusion

    spec = get_spec("fusion:efficientnet_lite0+mobilenetv2")
    assert spec.timm_name == "fusion(tf_efficientnet_lite0+mobilenetv2_100)"
    assert parse_fusion(FUSION) == [("tiny_efficientnet", 48), ("tiny_mobilenetv3", 40)]
    for bad in ("fusion:tiny_efficientnet", "fusion:tiny_efficientnet+nope", "fusion:tiny_efficientnet@x+mobilenetv2"):
        with pytest.raises(UnknownModelError):
            get_spec(bad)
    with pytest.raises(ValueError, match="own head"):
        create_model(FUSION, head="attention")
    with pytest.raises(ValueError, match="img-size"):
        data_config_for(create_model(FUSION), 64)


def test_fusion_forward_shapes_and_per_branch_preprocessing():
    """Each branch gets its own size, crop and mean/std, made from the one [0, 1] input."""
    from dfdetect.models.fusion import FusionModel

    torch.manual_seed(0)
    backbones = [create_model("tiny_efficientnet"), create_model("tiny_mobilenetv3")]
    model = FusionModel(["tiny_efficientnet", "tiny_mobilenetv3"], backbones, _member_cfgs()).eval()
    dc = data_config_for(model)
    assert dc["input_size"] == [3, 48, 48] and dc["mean"] == [0.0] * 3 and dc["std"] == [1.0] * 3
    assert [m["input_size"][-1] for m in dc["members"]] == [48, 32] and dc["members"][1]["resize"] == 40
    seen = []
    for m in model.members:
        m.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    x = torch.full((2, 3, 48, 48), 0.5)
    logits = model(x)
    assert logits.shape == (2, 2)
    assert model.forward_features(x).shape == (2, sum(model.head.dims)) == (2, model.head.fc.in_features)
    a, b = seen[:2]
    assert a.shape == (2, 3, 48, 48) and b.shape == (2, 3, 32, 32)
    torch.testing.assert_close(a, torch.zeros_like(a))  # (0.5 - 0.5) / 0.5
    want = (0.5 - torch.tensor(_member_cfgs()[1]["mean"])) / torch.tensor(_member_cfgs()[1]["std"])
    torch.testing.assert_close(b[0, :, 5, 5], want)
    # The branch's resize + centre crop: a ramp image lands where PIL-style resize-then-crop puts it.
    ramp = torch.linspace(0, 1, 48).view(1, 1, 1, 48).expand(1, 3, 48, 48).contiguous()
    got = model.prep[1](ramp)
    ref = torch.nn.functional.interpolate(ramp, size=(40, 40), mode="bilinear", align_corners=False)[:, :, 4:36, 4:36]
    torch.testing.assert_close(got, (ref - model.prep[1].mean) / model.prep[1].std)


def test_fusion_frozen_members_get_no_gradient():
    torch.manual_seed(0)
    model = create_model(FUSION)
    freeze_backbone(model, True)
    model(torch.rand(2, 3, 48, 48)).sum().backward()
    assert all(p.grad is None for p in model.members.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.get_classifier().parameters())


@pytest.fixture(scope="module")
def fusion_run(tiny_data, tmp_path_factory) -> tuple[Path, list[Path]]:
    """Two trained-looking member checkpoints (48 and 40 px), then a fusion trained on them with frozen members."""
    from dfdetect.engine.train import fit
    from dfdetect.models.checkpoint import save_checkpoint

    out = tmp_path_factory.mktemp("fusion2")
    torch.manual_seed(3)
    paths = []
    for name, size, resize in (("tiny_efficientnet", 48, 48), ("tiny_mobilenetv3", 40, 44)):
        m = create_model(name)
        p = out / f"{name}.pt"
        save_checkpoint(
            {
                "arch": name,
                "classes": ["real", "fake"],
                "data_config": data_config_for(m, size, resize),
                "model": m.state_dict(),
                "threshold": 0.5,
            },
            p,
        )
        paths.append(p)
    cfg = tiny_config(tiny_data, out, epochs=2, warmup_epochs=0)
    cfg.model.name = "fusion:tiny_efficientnet+tiny_mobilenetv3"
    cfg.model.weights = ",".join(map(str, paths))
    cfg.model.img_size = cfg.model.resize_to = None
    cfg.model.freeze_backbone = True
    return fit(cfg), paths


def test_fusion_trains_with_frozen_members_and_round_trips(fusion_run, tiny_data):
    from dfdetect.data.io import open_image
    from dfdetect.data.preprocess import preprocess
    from dfdetect.models.checkpoint import load_checkpoint
    from dfdetect.runtime.detector import Detector

    run, members = fusion_run
    ckpt = load_checkpoint(run / "best.pt")
    # Members' preprocessing comes from their checkpoints (48 px; 40 px with a 44 px resize), input = the largest.
    dc = ckpt["data_config"]
    assert dc["input_size"] == [3, 48, 48] and [m["input_size"][-1] for m in dc["members"]] == [48, 40]
    assert dc["members"][1]["resize"] == 44
    # Frozen members: weights and BN statistics unchanged after training; every epoch trained the head only.
    for i, p in enumerate(members):
        src = load_checkpoint(p)["model"]
        for k, v in src.items():
            if k.startswith(("classifier", "head.fc")):  # the member's own (removed) classifier
                continue
            torch.testing.assert_close(ckpt["model"][f"members.{i}.{k}"], v, msg=k)
    phases = (run / "history.csv").read_text().splitlines()[1:]
    assert len(phases) == 2 and all(",warmup," in line for line in phases)
    assert (run / "eval_test" / "metrics.json").is_file()
    # Round trip: rebuilt model == Detector.predict == ONNX Runtime.
    model = model_from_checkpoint(ckpt).eval()
    files = _files(tiny_data)
    batch = np.stack([preprocess(open_image(f), dc) for f in files])
    assert batch.min() >= -0.01 and batch.max() <= 1.01  # the fusion input is the image in [0, 1]
    with torch.no_grad():
        want = torch.softmax(model(torch.from_numpy(batch)), 1)[:, 1].numpy()
    det = Detector.load(run / "best.pt", device="cpu")
    np.testing.assert_allclose([p.score for p in det.predict(files, workers=0)], want, atol=1e-5)
    from dfdetect.runtime.export import export_onnx

    res = export_onnx(run / "best.pt", run / "fusion.onnx")
    assert res["max_abs_diff"] < 1e-4 and res["metadata"]["data_config"]["members"] == dc["members"]
    onnx_det = Detector.load(run / "fusion.onnx")
    np.testing.assert_allclose([p.score for p in onnx_det.predict(files, workers=0)], want, atol=1e-4)


def test_fusion_resume_keeps_member_preprocessing(fusion_run, tmp_path):
    """A resumed fusion run rebuilds its members' preprocessing from last.pt (not from the name's defaults)."""
    import shutil

    from dfdetect.engine.train import fit
    from dfdetect.models.checkpoint import load_checkpoint

    run, _ = fusion_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "summary.json").unlink()
    assert fit(None, resume=copy) == copy
    assert load_checkpoint(copy / "best.pt")["data_config"] == load_checkpoint(run / "best.pt")["data_config"]


def test_fusion_explain_and_member_errors(fusion_run, tiny_data, tmp_path):
    from dfdetect.data.io import open_image
    from dfdetect.models.fusion import create_fusion
    from dfdetect.runtime.detector import Detector

    run, members = fusion_run
    det = Detector.load(run / "best.pt", device="cpu", backend="torch")
    ex = explain_image(det, open_image(_files(tiny_data)[0]), methods=["gradcam"])
    assert ex.target_layer.startswith("members.0.")
    assert ex.input_maps["gradcam"].shape == (48, 48) and np.isfinite(ex.maps["gradcam"]).all()
    with pytest.raises(ValueError, match="holds tiny_efficientnet"):
        create_fusion("fusion:tiny_mobilenetv3+tiny_efficientnet", ",".join(map(str, members)))
    with pytest.raises(ValueError, match="3 sources"):
        create_fusion(FUSION, "none,none,none")
    # A fusion checkpoint as --weights restores the whole model.
    whole = create_fusion("fusion:tiny_efficientnet+tiny_mobilenetv3", str(run / "best.pt"))
    assert whole.data_config() == det.data_config


def test_headfit_cached_features_give_ordinary_checkpoints(fusion_run, tiny_data, tmp_path):
    """Heads trained on cached backbone features: the saved checkpoints score like any other model, and the
    validation AUC measured on the cache is the one a full evaluation of the saved checkpoint finds."""
    from dfdetect.engine.evaluate import evaluate_checkpoint
    from dfdetect.engine.headfit import fit_head_cached
    from dfdetect.models.checkpoint import load_checkpoint

    run, members = fusion_run
    manifest = run / "split.csv"
    paths = fit_head_cached(
        "tiny_efficientnet", str(members[0]), tiny_data, manifest, tmp_path, ["attention", "multiscale"], 48, epochs=2,
        workers=0,
    )  # fmt: skip
    paths += fit_head_cached(
        "fusion:tiny_efficientnet+tiny_mobilenetv3", ",".join(map(str, members)), tiny_data, manifest, tmp_path,
        epochs=2, workers=0,
    )  # fmt: skip
    assert [p.name for p in paths] == ["attention.pt", "multiscale.pt", "fusion.pt"]
    for p in paths:
        ckpt = load_checkpoint(p)
        assert ckpt["config"]["model"]["freeze_backbone"] and len(ckpt["history"]) == 2
        m = evaluate_checkpoint(p, tiny_data, tmp_path / p.stem, "valid", manifest, device="cpu", workers=0, n_boot=10)
        assert m["roc_auc"] == pytest.approx(ckpt["valid"]["valid_auc"], abs=1e-6), p.name
    # The backbone stayed as loaded: only the head differs from the member checkpoint.
    src = load_checkpoint(members[0])["model"]
    att = load_checkpoint(paths[0])["model"]
    for k, v in src.items():
        if not k.startswith("classifier"):
            torch.testing.assert_close(att[f"backbone.{k}"], v, msg=k)
