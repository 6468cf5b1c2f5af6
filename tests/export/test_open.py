"""Weights -> Embedder (selfee.export.open): the backend from the file, checkpoints on the backend measured
fastest (test_choose.py tests the choice), without ONNX where it is missing, and every Embedder with the whole
interface."""

import logging
import sys

import numpy as np
import pytest
import torch

from selfee.embed import embed_videos
from selfee.errors import SelfeeError
from selfee.export.graph import random_frames
from selfee.export.open import backend_for, open_embedder

from .conftest import cosine_min, decoded_count, reference


@pytest.mark.parametrize("backend", ["torch", "torchscript", "onnx", "auto"])
def test_every_cpu_backend_gives_the_same_embeddings_one_row_per_frame(tiny, exports, clip, tmp_path, backend):
    path, model = tiny
    weights = {"torchscript": exports["torchscript"], "onnx": exports["onnx"]}.get(backend, path)
    out = tmp_path / "emb"
    manifest = embed_videos([clip], weights, out, backend=None if backend == "auto" else backend, batch_size=8,
                            device="cpu", overrides=["embed.pipeline=torch"], open_embedder=open_embedder)
    x = np.load(out / "clip.npy")
    n = decoded_count(clip)
    assert x.shape == (n, 16) and x.dtype == np.float32  # exactly one row per decoded frame
    index = np.loadtxt(out / "clip.csv", delimiter=",", skiprows=1)
    assert index[:, 0].tolist() == list(range(n))
    np.testing.assert_allclose(index[:, 1], np.arange(n) / 20, atol=1e-6)
    # fp32 backends match the eager model; auto may pick bf16, held to the median cosine >= 0.99 of its choice
    assert cosine_min(x, reference(model, clip)) >= (0.9999 if manifest["precision"] == "fp32" else 0.98)
    # auto on the CPU runs a checkpoint on the backend measured fastest here
    assert manifest["backend"] == backend or (backend == "auto" and manifest["backend_selection"]["chosen"])
    assert manifest["videos"][0]["frames"] == n and manifest["videos"][0]["fps"] > 0
    assert len(manifest["weights_sha256"]) == 64 and "torch" in manifest["versions"]
    assert not list(out.glob("*.partial"))


@pytest.mark.parametrize("which, backend, name", [
    ("checkpoint", "torch", "torch"), ("checkpoint", "auto", None), ("checkpoint", "torchscript", "torchscript"),
    ("torchscript", "auto", "torchscript"), ("onnx", "auto", "onnx"),
])
def test_every_embedder_has_the_whole_interface(tiny, exports, which, backend, name):
    """name, dim, device, fixed_size, submit(frames).result() and __call__, read directly by their callers."""
    weights = tiny[0] if which == "checkpoint" else exports[which]
    embedder, cfg = open_embedder(weights, backend, "cpu")
    assert embedder.name == name if name else embedder.name in {"torch", "torchscript", "onnx"}  # auto: measured
    assert embedder.dim == 16 and cfg.data.input_size == (32, 48)
    assert torch.device(embedder.device) == torch.device("cpu") and embedder.fixed_size is None
    x = random_frames(3, (32, 48), seed=1)
    got = embedder.submit(x).result()
    assert got.shape == (3, 16) and got.dtype == np.float32
    np.testing.assert_allclose(embedder(x), got, rtol=1e-6)


def test_without_onnx_a_checkpoint_runs_without_it(tiny, monkeypatch, caplog):
    """An installation without onnx/onnxruntime: auto on the CPU times the other backends only."""
    from selfee._deps import available

    for module in ("onnx", "onnxruntime"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails, find_spec finds nothing
    available.cache_clear()
    try:
        with caplog.at_level(logging.INFO, logger="selfee"):
            embedder, cfg = open_embedder(tiny[0], "auto", "cpu")
    finally:
        available.cache_clear()
    assert embedder.name in ("torch", "torchscript") and cfg.data.input_size == (32, 48)
    assert {r["backend"] for r in embedder.selection["table"]} == {"torch", "torchscript"}
    x = random_frames(2, (32, 48))
    with torch.no_grad():
        ref = tiny[1].encoder(x.float() / 255).numpy()
    assert cosine_min(embedder(x), ref) >= (0.9999 if embedder.precision == "fp32" else 0.98)


def test_backend_from_the_file_and_wrong_pairs_refused(tiny, exports, tmp_path):
    assert [backend_for(p) for p in ("a.pt", "a.PTH", "a.pkl", "a.ts", "a.onnx", "a.engine", "a.plan", "a.bin")] == [
        "torch", "torch", "torch", "torchscript", "onnx", "tensorrt", "tensorrt", "torch"]
    with pytest.raises(SelfeeError, match="weights file not found"):
        open_embedder(tmp_path / "missing.pt")
    with pytest.raises(SelfeeError, match="the torch backend needs a checkpoint"):
        open_embedder(exports["onnx"], "torch", "cpu")
    with pytest.raises(SelfeeError, match="the tensorrt backend needs an exported model"):
        open_embedder(tiny[0], "tensorrt", "cpu")
