"""BatchNorm statistics for embedding: re-estimated on plain (un-augmented) frames at checkpoints."""

import torch
from torch import nn

from conftest import make_tiny_cfg, numbered_frames, write_video
from selfee.checkpoint import load_model
from selfee.config import ModelConfig
from selfee.model import Selfee, embedding_bn_stats
from selfee.train import run_training

SMALL = ModelConfig(arch="resnet18", proj_dim=16, pred_hidden=4, cld_dim=8, init="none")


def test_statistics_are_those_of_the_plain_frames():
    torch.manual_seed(0)
    enc = Selfee(SMALL).encoder
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    batches = [torch.rand(6, 3, 32, 32) * (i + 1) / 3 for i in range(3)]
    stats, seen = embedding_bn_stats(enc, iter(batches), frames=16)
    assert seen == 16  # 6 + 6 + the first 4 of the last batch
    # the first BatchNorm sees conv1's output: its statistics are the average over batches of each
    # batch's mean and unbiased variance (a cumulative average), computed here in float64
    used = [batches[0], batches[1], batches[2][:4]]
    with torch.no_grad():
        feats = [enc.backbone.conv1(x).double() for x in used]
    means = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats])
    varis = torch.stack([f.transpose(0, 1).flatten(1).var(dim=1, unbiased=True) for f in feats])
    assert torch.allclose(stats["backbone.bn1.running_mean"].double(), means.mean(0), atol=1e-5)
    assert torch.allclose(stats["backbone.bn1.running_var"].double(), varis.mean(0), rtol=1e-4, atol=1e-6)
    assert int(stats["backbone.bn1.num_batches_tracked"]) == 3
    # every BatchNorm buffer of the encoder is there (the projector's too), nothing else
    bn_keys = {k for k in before if k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}
    assert set(stats) == bn_keys and any(k.startswith("projector.") for k in stats)
    # the encoder itself is untouched
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())


def test_sync_batchnorm_runs_in_one_process():
    enc = nn.SyncBatchNorm.convert_sync_batchnorm(Selfee(SMALL).encoder)
    stats, seen = embedding_bn_stats(enc, iter([torch.rand(4, 3, 32, 32)]), frames=4)
    assert seen == 4 and torch.isfinite(stats["projector.1.running_var"]).all()


def _cfg(*extra):
    return make_tiny_cfg("model.proj_dim=16", "model.pred_hidden=4", "model.cld_dim=8", "optim.steps=2",
                         "train.checkpoint_every=2", *extra)


def test_checkpoints_carry_them_and_embedding_uses_them(tmp_path):
    video = write_video(tmp_path / "v.mp4", numbered_frames(40), g=16)
    run_training(_cfg("train.embed_bn_frames=24"), [video], tmp_path / "run", show_progress=False)
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["embed_bn"]["frames"] == 24
    plain = ckpt["embed_bn"]["encoder"]
    embed_model, _ = load_model(tmp_path / "run" / "last.pt")
    train_model, _ = load_model(tmp_path / "run" / "last.pt", bn="train")
    for k, v in plain.items():
        assert torch.equal(embed_model.encoder.state_dict()[k], v)
        assert torch.equal(train_model.encoder.state_dict()[k], ckpt["model"][f"encoder.{k}"])
    # weights are the same; the statistics differ (augmented vs plain frames)
    w = "encoder.backbone.conv1.weight"
    assert torch.equal(embed_model.state_dict()[w], train_model.state_dict()[w])
    k = "backbone.bn1.running_mean"
    assert not torch.allclose(plain[k], ckpt["model"][f"encoder.{k}"])
    # off: the checkpoint has none, and embedding uses the training statistics
    run_training(_cfg("train.embed_bn_frames=0"), [video], tmp_path / "off", show_progress=False)
    assert "embed_bn" not in torch.load(tmp_path / "off" / "last.pt", weights_only=True)
