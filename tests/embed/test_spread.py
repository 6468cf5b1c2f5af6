"""The spread of a video's embeddings in its record and the manifest, and the warning when they are nearly constant."""

import json
import logging

import numpy as np
import pytest
import torch

from conftest import numbered_frames, write_video
from selfee.embed import HostEmbedder, embed_videos
from selfee.embed.outputs import NEARLY_CONSTANT_COSINE, Spread, embedding_spread, nearly_constant
from selfee.losses import collapse_level

from .conftest import CFG


def _reference(x: np.ndarray) -> tuple[float, float]:
    """(collapse level, mean pairwise cosine) from their definitions, in float64 NumPy with a full Gram matrix."""
    z = x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    collapse = 1 - np.sqrt(z.shape[1]) * z.std(axis=0, ddof=1).mean()
    gram = z @ z.T
    n = len(z)
    return collapse, (gram.sum() - np.trace(gram)) / (n * (n - 1))


@pytest.mark.parametrize("offset", [0.0, 0.5, 3.0])  # spread out, in between, nearly one direction
def test_spread_matches_the_definitions_and_the_trainers_collapse_level(offset):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((301, 24)) + offset).astype(np.float32)
    got = embedding_spread(x)
    collapse, cosine = _reference(x)
    assert got["frames"] == 301
    assert got["collapse"] == pytest.approx(collapse, abs=1e-9)
    assert got["mean_cosine"] == pytest.approx(cosine, abs=1e-9)
    assert got["collapse"] == pytest.approx(float(collapse_level(torch.from_numpy(x))), abs=1e-5)  # what training logs
    streamed = Spread()
    for a, b in ((0, 7), (7, 8), (8, 200), (200, 301)):  # rows arriving in batches of any size
        streamed.add(x[a:b])
    assert streamed.result() == pytest.approx(got)


def test_constant_and_degenerate_embeddings_are_nearly_constant():
    rng = np.random.default_rng(0)
    assert not nearly_constant(embedding_spread(rng.standard_normal((50, 8))))
    const = np.tile(rng.standard_normal(8), (50, 1))
    s = embedding_spread(const)
    assert s["mean_cosine"] == pytest.approx(1.0) and s["collapse"] == pytest.approx(1.0, abs=1e-6)
    assert nearly_constant(s)
    zeros = embedding_spread(np.zeros((50, 8)))  # a dead output: no direction at all
    assert zeros["mean_cosine"] == 0 and zeros["collapse"] == 1 and nearly_constant(zeros)
    assert embedding_spread(np.ones((1, 8)))["mean_cosine"] is None  # one frame has no spread


class _Constant(HostEmbedder):
    """An encoder whose output does not depend on its input (the failure the warning is for)."""

    name = "constant"
    dim = 32

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        return np.tile(np.linspace(0.1, 1.0, self.dim, dtype=np.float32), (len(frames), 1))


class _Spread(HostEmbedder):
    """Centred pixels through a fixed random projection: frames that differ give directions that differ."""

    name = "spread"
    dim = 32

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(3 * 32 * 48, self.dim, generator=g)

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        x = frames.float().flatten(1)
        return ((x - x.mean(1, keepdim=True)) @ self.w).numpy()


@pytest.mark.parametrize("embedder, warned", [(_Constant(), True), (_Spread(), False)])
def test_embed_records_the_spread_and_warns_once_for_a_constant_encoder(embedder, warned, tmp_path, caplog):
    video = write_video(tmp_path / "v.mp4", numbered_frames(40), g=8)
    with caplog.at_level(logging.WARNING, logger="selfee"):
        embed_videos([video], "weights", tmp_path / "out", cfg=CFG, embedder=embedder, batch_size=8,
                     device="cpu", show_progress=False)
    lines = [r.getMessage() for r in caplog.records if "nearly constant" in r.getMessage()]
    assert len(lines) == (1 if warned else 0)
    record = json.loads((tmp_path / "out" / "v.embed.json").read_text())
    spread = record["spread"]
    collapse, cosine = _reference(np.load(tmp_path / "out" / "v.npy"))
    assert spread["frames"] == 40
    assert spread["mean_cosine"] == pytest.approx(cosine, abs=1e-6)
    assert spread["collapse"] == pytest.approx(collapse, abs=1e-6)
    assert (spread["mean_cosine"] > NEARLY_CONSTANT_COSINE) == warned
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["videos"][0]["spread"] == spread
    assert manifest["nearly_constant"] == ([str(video)] if warned else [])
    if warned:
        assert lines[0].startswith("v.mp4: embeddings nearly constant (mean pairwise cosine 1.0000")
