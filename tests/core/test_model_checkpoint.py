"""Model shapes and heads; original Selfee checkpoints convert exactly; atomic checkpoints."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from conftest import numbered_frames, write_video
from selfee.checkpoint import convert_file, convert_original, load_checkpoint, load_model
from selfee.config import ModelConfig
from selfee.errors import SelfeeError
from selfee.fileio import atomic_save
from selfee.model import NormedLinear, Selfee

TINY = ModelConfig(arch="resnet18", proj_dim=64, pred_hidden=16, cld_dim=32, init="none")


def test_shapes_and_heads():
    torch.manual_seed(0)
    m = Selfee(TINY).eval()
    x1, x2 = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    out = m(x1, x2)
    assert out.p1.shape == out.z1.shape == (3, 64)
    assert out.c1.shape == (3, 32)
    assert torch.allclose(out.c1.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(m.encoder(x1), out.z1)  # the embedding is the projector output
    assert out.y1 is None and out.t1 is None


def test_normed_linear_is_a_cosine():
    lin = NormedLinear(5, 3)
    x = torch.randn(4, 5)
    ref = F.cosine_similarity(x.unsqueeze(2), lin.weight.unsqueeze(0), dim=1)
    assert torch.allclose(lin(x), ref, atol=1e-6)


def test_byol_target_is_an_ema_of_the_online_encoder():
    torch.manual_seed(0)
    m = Selfee(TINY, byol=True)
    assert all(not p.requires_grad for p in m.target.parameters())
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.target.parameters()]
    m.update_target(0.99)
    for b, t, o in zip(before, m.target.parameters(), m.encoder.parameters()):
        assert torch.allclose(t, 0.99 * b + 0.01 * o, atol=1e-6)
    out = m.train()(torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64))
    assert out.y1 is not None and out.t1.shape == (4, 32)


# --- the original's module layout, written from its documented structure --------------------


class _OrigNormedLinear(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(i, o))

    def forward(self, x):
        return F.normalize(x, dim=1).mm(F.normalize(self.weight, dim=0))


class _OrigNormalize(nn.Module):
    def forward(self, x):
        return x / x.pow(2).sum(1, keepdim=True).pow(0.5)


class _AddProjector(nn.Module):
    def __init__(self, backbone, sizes):
        super().__init__()
        self.backbone = backbone
        self.backbone.fc = nn.Identity()
        layers = []
        for i in range(len(sizes) - 2):
            layers += [nn.Linear(sizes[i], sizes[i + 1]), nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(inplace=True)]
        layers += [nn.Linear(sizes[-2], sizes[-1]), nn.BatchNorm1d(sizes[-1])]
        self.projector = nn.Sequential(*layers)

    def forward(self, x):
        return self.projector(self.backbone(x))


class _PredAndCLD(nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.predictor = nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.BatchNorm1d(sizes[1]), nn.ReLU(inplace=True),
                                       nn.Linear(sizes[1], sizes[2]))
        self.groupDis = nn.Sequential(_OrigNormedLinear(sizes[0], sizes[1] * 2), _OrigNormalize())


class _CLDSimSiam(nn.Module):
    def __init__(self, backbone, predictor):
        super().__init__()
        self.backbone = backbone
        self.predictor = predictor

    @torch.no_grad()
    def infer(self, x):
        return self.backbone(x)


def _original(arch="resnet18", feat=512, proj=64, pred=16):
    torch.manual_seed(1)
    net = getattr(torchvision.models, arch)()
    m = _CLDSimSiam(_AddProjector(net, [feat, proj, proj, proj]), _PredAndCLD([proj, pred, proj]))
    # non-trivial batch-norm statistics, as a trained model has
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m.backbone(torch.rand(8, 3, 64, 64))
    return m.eval()


def test_converted_original_gives_identical_embeddings_and_heads(tmp_path):
    orig = _original()
    path = tmp_path / "original.pkl"
    torch.save(orig.state_dict(), path)
    out = tmp_path / "converted.pt"
    convert_file(path, out)
    model, cfg = load_model(out)
    assert cfg.model.arch == "resnet18" and cfg.model.proj_dim == 64 and cfg.model.cld_dim == 32
    x = torch.rand(4, 3, 64, 64)
    assert torch.equal(model.encoder(x), orig.infer(x))
    z = model.encoder(x)
    ref_cld = orig.predictor.groupDis(z)
    assert torch.allclose(model.cld_head(z), ref_cld, atol=1e-6)
    assert torch.allclose(model.predictor(z), orig.predictor.predictor(z), atol=1e-6)
    # load_checkpoint converts an original file on the fly too
    assert load_checkpoint(path)["config"]["model"]["arch"] == "resnet18"


def test_conversion_infers_resnet50_paper_layout():
    orig = _original("resnet50", feat=2048, proj=2048, pred=512)
    state, mcfg, byol = convert_original(orig.state_dict())
    assert (mcfg.arch, mcfg.proj_dim, mcfg.pred_hidden, mcfg.cld_dim) == ("resnet50", 2048, 512, 1024) and not byol
    assert len(state) == len(orig.state_dict())


def test_conversion_is_strict():
    sd = _original().state_dict()
    bad = dict(sd)
    bad["predictor.predictor.3.weight"] = torch.zeros(5, 5)
    with pytest.raises(SelfeeError, match="'predictor.3.weight' has shape"):
        convert_original(bad)
    extra = dict(sd)
    extra["backbone.extra.weight"] = torch.zeros(1)
    with pytest.raises(SelfeeError, match="'backbone.extra.weight' has no place"):
        convert_original(extra)
    missing = {k: v for k, v in sd.items() if k != "backbone.projector.3.weight"}
    with pytest.raises(SelfeeError, match="lack 'encoder.projector.3.weight'"):
        convert_original(missing)


def test_byol_original_converts_with_its_target():
    orig = _original()
    sd = {}
    for k, v in orig.state_dict().items():
        if k.startswith("backbone."):
            sd["online_encoder." + k[len("backbone."):]] = v
            sd["target_encoder." + k[len("backbone."):]] = v + 0  # a copy
        else:
            sd[k] = v
    state, mcfg, byol = convert_original(sd)
    assert byol and any(k.startswith("target.") for k in state)


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_save({"a": torch.ones(2)}, path)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError):
        atomic_save({"a": torch.zeros(2)}, path)
    assert torch.load(path)["a"].sum() == 2  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_unreadable_checkpoints_fail_clearly(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(SelfeeError, match="junk.pt: cannot read checkpoint"):
        load_checkpoint(junk)
    with pytest.raises(SelfeeError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(1)}, other)
    with pytest.raises(SelfeeError, match="not a selfee-fast checkpoint"):
        load_checkpoint(other)


def _byol_layout(orig):
    """The original CLD_Byol layout: online_encoder.* and target_encoder.* instead of backbone.*."""
    sd = {}
    for k, v in orig.state_dict().items():
        if k.startswith("backbone."):
            sd["online_encoder." + k[len("backbone."):]] = v
            sd["target_encoder." + k[len("backbone."):]] = v + 1  # an EMA differs from the online weights
        else:
            sd[k] = v
    return sd


def test_byol_original_with_part_of_its_target_is_refused(tmp_path):
    full = _byol_layout(_original())
    sd = {k: v for k, v in full.items() if k != "target_encoder.backbone.layer2.0.conv1.weight"}
    with pytest.raises(SelfeeError, match=r"lack 'target.backbone.layer2.0.conv1.weight' \(1 tensors missing\)"):
        convert_original(sd)
    partial = {k: v for k, v in full.items() if not k.startswith("target_encoder.projector.")}
    with pytest.raises(SelfeeError, match="lack 'target.projector.0.weight'"):
        convert_original(partial)
    path = tmp_path / "byol.pkl"
    torch.save(sd, path)
    assert run_cli("convert", path, tmp_path / "out.pt").exit_code == 2
    assert not (tmp_path / "out.pt").exists()


def test_a_file_without_any_target_starts_the_byol_target_from_the_encoder(tmp_path):
    orig = _original()
    path = tmp_path / "simsiam.pkl"
    torch.save(orig.state_dict(), path)
    model, _ = load_model(path, byol=True)
    enc, tgt = model.encoder.state_dict(), model.target.state_dict()
    assert set(enc) == set(tgt) and all(torch.equal(enc[k], tgt[k]) for k in enc)
    assert torch.equal(tgt["backbone.conv1.weight"], orig.state_dict()["backbone.backbone.conv1.weight"])


# --- train --init: the weights the first step starts from are the file's ----------------------

# the original's names -> ours, written out here as an independent reference
_ORIGINAL_TO_OURS = {
    "backbone.backbone.": "encoder.backbone.",
    "backbone.projector.": "encoder.projector.",
    "predictor.predictor.": "predictor.",
    "predictor.groupDis.0.": "cld_head.linear.",
}
ORIGINAL_DIMS = ("model.proj_dim=64", "model.pred_hidden=16", "model.cld_dim=32")  # those of _original()


def run_cli(*args):
    from typer.testing import CliRunner

    from selfee.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _weights_at_first_step(monkeypatch, tmp_path, init, tiny_config):
    """``selfee-fast train --init INIT``, stopped where training would start: the model's state then."""
    import selfee.train

    seen = {}

    def fit(self, *a, **k):
        seen["step"] = self.step
        seen["state"] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return {}

    monkeypatch.setattr(selfee.train.Trainer, "fit", fit)
    video = write_video(tmp_path / "clip.mp4", numbered_frames(20))
    r = run_cli("train", video, "--out", tmp_path / "run", "--init", init, "--steps", 1, "--config", tiny_config(*ORIGINAL_DIMS))
    assert r.exit_code == 0, r.output
    return seen


def test_train_init_from_an_original_file(monkeypatch, tmp_path, tiny_config):
    sd = _original().state_dict()
    path = tmp_path / "Selfee_weights.pkl"
    torch.save(sd, path)
    seen = _weights_at_first_step(monkeypatch, tmp_path, path, tiny_config)
    assert seen["step"] == 0 and len(seen["state"]) == len(sd)
    for k, v in sd.items():
        old = next(p for p in _ORIGINAL_TO_OURS if k.startswith(p))
        assert torch.equal(seen["state"][_ORIGINAL_TO_OURS[old] + k[len(old):]], v), k


def test_train_init_from_a_selfee_fast_checkpoint_takes_weights_only(monkeypatch, tmp_path, tiny_cfg, tiny_config):
    from selfee.train import Trainer

    cfg = tiny_cfg(*ORIGINAL_DIMS, "train.seed=5")
    trainer = Trainer(cfg, tmp_path / "earlier")
    with torch.no_grad():  # weights no fresh model has, buffers included
        for v in trainer.model.state_dict().values():
            if v.is_floating_point():
                v.add_(torch.randn_like(v).abs())
    trainer.step = 7
    trainer.save()
    ckpt = torch.load(tmp_path / "earlier" / "last.pt", weights_only=True)
    seen = _weights_at_first_step(monkeypatch, tmp_path, tmp_path / "earlier" / "last.pt", tiny_config)
    assert seen["step"] == 0  # --init takes the weights, not the optimizer or the step (that is --resume)
    assert set(seen["state"]) == set(ckpt["model"])
    for k, v in ckpt["model"].items():
        assert torch.equal(seen["state"][k], v), k
