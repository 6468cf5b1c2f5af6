"""embed.features through export: the exported graph outputs the chosen features, its metadata says which, every
backend reports them from the metadata, and embedding refuses an export that cannot give what the config asks."""

import json

import numpy as np
import pytest
import torch

from selfee.bench.embed import random_checkpoint
from selfee.checkpoint import load_model
from selfee.embed import embed_videos
from selfee.errors import SelfeeError
from selfee.export.exporter import export_checkpoint
from selfee.export.graph import random_frames
from selfee.export.open import open_embedder

from .conftest import CFG


@pytest.fixture(scope="module")
def backbone_exports(tmp_path_factory):
    """(checkpoint, {format: file}) of a tiny checkpoint trained with embed.features = backbone."""
    out = tmp_path_factory.mktemp("backbone")
    ckpt = random_checkpoint(CFG.replace(**{"embed.features": "backbone"}), out / "bb.pt", seed=1)
    files = {fmt: export_checkpoint(ckpt, out, fmt=fmt, frames=4, quiet=True)["files"][0]
             for fmt in ("torchscript", "onnx")}
    return ckpt, files


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_the_export_outputs_the_backbone_and_says_so(backbone_exports, fmt):
    ckpt, files = backbone_exports
    model, _ = load_model(ckpt)
    embedder, cfg = open_embedder(files[fmt], device="cpu")
    assert cfg.embed.features == "backbone" and embedder.meta["features"] == "backbone"
    assert embedder.dim == embedder.meta["embed_dim"] == 512  # ResNet-18's pooled features, not the 16-d projector
    x = random_frames(5, (32, 48), seed=3)
    with torch.no_grad():
        want = model.encoder.backbone(x.float() / 255).numpy()  # the backbone, computed apart from forward()
    np.testing.assert_allclose(embedder(x), want, rtol=1e-4, atol=1e-4)
    sidecar = json.loads(open(files[fmt] + ".json").read())
    assert sidecar["features"] == "backbone" and sidecar["verification"]["passed"]


def test_onnx_shows_the_features_among_its_metadata(backbone_exports):
    import onnx

    props = {p.key: p.value for p in onnx.load(backbone_exports[1]["onnx"]).metadata_props}
    assert json.loads(props["selfee.features"]) == "backbone"


def test_metadata_that_contradicts_its_config_is_refused():
    from selfee.export.graph import build_metadata, metadata_config

    meta = build_metadata(CFG, 16, "fp32", "x.pt", "0" * 64)
    assert meta["features"] == "projector" and metadata_config(meta, "m").embed.features == "projector"
    old = {k: v for k, v in meta.items() if k != "features"}  # exports made before embed.features: the projector
    assert metadata_config(old, "m").embed.features == "projector"
    with pytest.raises(SelfeeError, match="inconsistent export metadata"):
        metadata_config({**meta, "features": "backbone"}, "m")


def test_embedding_asks_the_export_for_other_features_is_an_error(backbone_exports, clip, tmp_path):
    with pytest.raises(SelfeeError, match="outputs the backbone features, not the projector"):
        embed_videos([clip], backbone_exports[1]["onnx"], tmp_path / "e", device="cpu",
                     overrides=["embed.features=projector"], open_embedder=open_embedder, show_progress=False)


def test_a_checkpoint_in_torch_embeds_what_the_override_asks(backbone_exports, clip, tmp_path):
    """The paper's projector output of a backbone-default checkpoint: one flag away (--set embed.features=projector)."""
    ckpt, _ = backbone_exports
    model, _ = load_model(ckpt)
    m = embed_videos([clip], ckpt, tmp_path / "p", device="cpu", backend="torch", batch_size=8,
                     overrides=["embed.features=projector"], open_embedder=open_embedder, show_progress=False)
    x = np.load(tmp_path / "p" / "clip.npy")
    assert x.shape[1] == 16 and m["config"]["embed"]["features"] == "projector"
    b = embed_videos([clip], ckpt, tmp_path / "b", device="cpu", backend="torch", batch_size=8,
                     open_embedder=open_embedder, show_progress=False)
    assert np.load(tmp_path / "b" / "clip.npy").shape[1] == 512 and b["config"]["embed"]["features"] == "backbone"
    with torch.no_grad():  # both are the same weights' outputs on the same frames
        from embed.conftest import reference

        model.encoder.features = "projector"
        np.testing.assert_allclose(x, reference(model, clip), rtol=1e-4, atol=1e-4)
