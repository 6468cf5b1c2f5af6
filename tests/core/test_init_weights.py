"""--init imagenet: torchvision's weights from the hub (or its cache), a clear message when unavailable."""

import pytest
import torch
import torchvision

from selfee.checkpoint import imagenet_backbone
from selfee.config import ModelConfig
from selfee.errors import SelfeeError
from selfee.model import build_model


def test_offline_without_cache_says_where_to_put_the_file(monkeypatch, tmp_path):
    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(SelfeeError) as e:
        imagenet_backbone("resnet18")
    msg = str(e.value)
    assert "resnet18" in msg and str(tmp_path / "checkpoints") in msg and "--init none" in msg


def test_imagenet_weights_are_loaded_into_the_backbone(monkeypatch):
    ref = torchvision.models.resnet18()
    sd = ref.state_dict()
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: sd)
    model = build_model(ModelConfig(arch="resnet18", proj_dim=16, pred_hidden=8, cld_dim=8, init="imagenet"))
    assert torch.equal(model.encoder.backbone.conv1.weight, sd["conv1.weight"])
    assert not hasattr(model.encoder.backbone.fc, "weight")  # fc removed
