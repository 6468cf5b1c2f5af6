"""embed.features: the embedding is the backbone output, the projector output, or both side by side."""

import pytest
import torch
import torch.nn.functional as F

from selfee.checkpoint import checkpoint_dict, load_model
from selfee.config import ModelConfig, SelfeeConfig
from selfee.embed import TorchEmbedder
from selfee.fileio import atomic_save
from selfee.model import Selfee, embedding_bn_stats

SMALL = ModelConfig(arch="resnet18", proj_dim=16, pred_hidden=4, cld_dim=8, init="none")


def _model(seed=0):
    torch.manual_seed(seed)
    return Selfee(SMALL).eval()


def test_each_choice_is_the_named_representation():
    enc = _model().encoder
    x = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        h = enc.backbone(x)  # 512: resnet18's pooled features
        z = enc.projector(h)
        got = {}
        for f in ("projector", "backbone", "both"):
            enc.features = f
            got[f] = enc(x)
            assert enc.embed_dim == got[f].shape[1]
    assert torch.equal(got["projector"], z) and z.shape[1] == 16
    assert torch.equal(got["backbone"], h) and h.shape[1] == 512
    assert torch.allclose(got["both"], torch.cat([F.normalize(h, dim=1), F.normalize(z, dim=1)], 1))
    with pytest.raises(ValueError, match="features"):
        enc.features = "pixels"


def test_training_outputs_do_not_depend_on_the_embedding_choice():
    model = _model()
    x1, x2 = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x1, x2)
        model.encoder.features = "backbone"
        out = model(x1, x2)
    for a, b in zip(ref, out):
        if a is not None:
            assert torch.equal(a, b)
    assert out.z1.shape[1] == SMALL.proj_dim  # the SimSiam targets stay the projector's


def test_batchnorm_reestimation_covers_the_projector_whatever_the_features():
    enc = _model().encoder
    enc.features = "backbone"
    stats, _ = embedding_bn_stats(enc, iter([torch.rand(8, 3, 32, 32)]), frames=8)
    assert not torch.equal(stats["projector.1.running_mean"], torch.zeros(SMALL.proj_dim))
    assert int(stats["projector.7.num_batches_tracked"]) == 1


def test_checkpoint_config_chooses_what_embedding_returns(tmp_path):
    model = _model()
    for f, dim in (("backbone", 512), ("both", 512 + 16), ("projector", 16)):
        cfg = SelfeeConfig().replace(**{f"model.{k}": v for k, v in SMALL.__dict__.items()}, **{"embed.features": f})
        atomic_save(checkpoint_dict(model, cfg), tmp_path / f"{f}.pt")
        loaded, _ = load_model(tmp_path / f"{f}.pt")
        assert loaded.encoder.features == f
        emb = TorchEmbedder(loaded.encoder, "cpu")
        assert emb.dim == dim
        assert emb(torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)).shape == (3, dim)


def test_a_checkpoint_without_the_setting_embeds_the_projector_output(tmp_path):
    """Checkpoints written before embed.features have no such key in their config: the paper's projector."""
    model = _model()
    cfg = SelfeeConfig().replace(**{f"model.{k}": v for k, v in SMALL.__dict__.items()}).to_dict()
    del cfg["embed"]["features"]
    atomic_save(checkpoint_dict(model, SelfeeConfig.from_dict(cfg)) | {"config": cfg}, tmp_path / "old.pt")
    loaded, lcfg = load_model(tmp_path / "old.pt")
    assert loaded.encoder.features == lcfg.embed.features == "projector"
    assert SelfeeConfig().embed.features == "projector"  # the paper's recipe stays the default
