"""--init imagenet: torchvision's IMAGENET1K_V1 weights (the original's ``pretrained=True``) from the hub
(or its cache), a clear message when unavailable."""

import pytest
import torch
import torchvision

from selfee.checkpoint import build_model, imagenet_backbone
from selfee.config import ModelConfig
from selfee.errors import SelfeeError


def test_offline_without_cache_says_where_to_put_the_file(monkeypatch, tmp_path):
    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(SelfeeError) as e:
        imagenet_backbone("resnet18")
    msg = str(e.value)
    assert "resnet18" in msg and str(tmp_path / "checkpoints") in msg and "--init none" in msg
    with pytest.raises(SelfeeError) as e:
        imagenet_backbone("resnet50")
    msg = str(e.value)  # the V1 file the original used, not torchvision's current DEFAULT (V2)
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in msg
    assert str(tmp_path / "checkpoints" / "resnet50-0676ba61.pth") in msg
    assert "11ad3fa6" not in msg


# The files torchvision's ``pretrained=True`` (IMAGENET1K_V1) downloads, as the original Selfee used.
V1_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "resnet152": "resnet152-394f9c45.pth",
    "wide_resnet50_2": "wide_resnet50_2-95faca4d.pth",
    "resnext50_32x4d": "resnext50_32x4d-7cdf4587.pth",
}


@pytest.mark.parametrize("arch", sorted(V1_FILES))
def test_imagenet_init_asks_for_the_v1_file(monkeypatch, arch):
    urls = []

    def fake(url, *a, **k):
        urls.append(url)
        return {"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake)
    sd = imagenet_backbone(arch)
    assert urls == ["https://download.pytorch.org/models/" + V1_FILES[arch]]
    assert set(sd) == {"conv1.weight"}  # fc dropped


def test_imagenet_weights_are_loaded_into_the_backbone(monkeypatch):
    ref = torchvision.models.resnet18()
    sd = ref.state_dict()
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: sd)
    model = build_model(ModelConfig(arch="resnet18", proj_dim=16, pred_hidden=8, cld_dim=8, init="imagenet"))
    assert torch.equal(model.encoder.backbone.conv1.weight, sd["conv1.weight"])
    assert not hasattr(model.encoder.backbone.fc, "weight")  # fc removed
    # BYOL: the target starts as the same pretrained encoder
    byol = build_model(ModelConfig(arch="resnet18", proj_dim=16, pred_hidden=8, cld_dim=8, init="imagenet"), byol=True)
    for k, v in sd.items():
        if not k.startswith("fc."):
            assert torch.equal(byol.encoder.backbone.state_dict()[k], v) and torch.equal(byol.target.backbone.state_dict()[k], v)
