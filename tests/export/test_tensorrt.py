"""TensorRT engines (need TensorRT 10+ and a CUDA GPU; skipped elsewhere): build, metadata, timing cache,
engine vs eager, and bulk embedding through the engine."""

import json

import numpy as np
import pytest
import torch

from conftest import numbered_frames, write_video
from selfee.embed import embed_videos
from selfee.export.exporter import export_checkpoint
from selfee.export.graph import random_frames
from selfee.export.open import open_embedder

from .conftest import cosine_min

pytestmark = [pytest.mark.trt, pytest.mark.gpu]


@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_engine_matches_eager(tiny, tmp_path, precision):
    cache = tmp_path / "timing.cache"
    report = export_checkpoint(tiny[0], tmp_path, fmt="onnx", trt=True, precision=precision, max_batch=32,
                               opt_batch=16, frames=8, timing_cache=cache, quiet=True)
    engine = tmp_path / "tiny.engine"
    assert str(engine) in report["files"] and cache.is_file() and cache.stat().st_size > 0
    meta = json.loads((tmp_path / "tiny.engine.json").read_text())
    assert meta["precision"] == precision and meta["shapes"]["max"] == [32, 3, 32, 48]
    assert meta["shapes"]["min"][0] == 1 and meta["shapes"]["opt"][0] == 16
    assert int(meta["tensorrt"].split(".")[0]) >= 10 and meta["gpu"] and meta["checkpoint_sha256"]
    embedder, cfg = open_embedder(engine, device="cuda")
    assert embedder.name == "tensorrt" and cfg.data.input_size == (32, 48)
    x = random_frames(40, (32, 48), seed=5)  # more than max_batch: split into profile-sized runs
    with torch.no_grad():
        ref = tiny[1].encoder.float().cpu()(x.float() / 255).numpy()
    assert cosine_min(embedder(x), ref) >= (0.9999 if precision == "fp32" else 0.999)


def test_timing_cache_is_reused(tiny, tmp_path):
    cache = tmp_path / "timing.cache"
    export_checkpoint(tiny[0], tmp_path / "a", fmt="onnx", trt=True, precision="fp16", max_batch=8, frames=4,
                      timing_cache=cache, quiet=True)
    first = cache.read_bytes()
    export_checkpoint(tiny[0], tmp_path / "b", fmt="onnx", trt=True, precision="fp16", max_batch=8, frames=4,
                      timing_cache=cache, quiet=True)
    assert len(cache.read_bytes()) >= len(first) > 0


def test_embedding_through_the_engine(tiny, tmp_path):
    export_checkpoint(tiny[0], tmp_path, fmt="onnx", trt=True, precision="fp16", max_batch=16, frames=4, quiet=True)
    video = write_video(tmp_path / "v.mp4", numbered_frames(30), g=8)
    m = embed_videos([video], tmp_path / "tiny.engine", tmp_path / "emb", batch_size=16, open_embedder=open_embedder)
    assert m["backend"] == "tensorrt" and m["videos"][0]["frames"] == 30
    ref = embed_videos([video], tiny[0], tmp_path / "ref", backend="torch", device="cpu", batch_size=16,
                       open_embedder=open_embedder)
    assert ref["videos"][0]["frames"] == 30
    assert cosine_min(np.load(tmp_path / "emb" / "v.npy"), np.load(tmp_path / "ref" / "v.npy")) >= 0.999
