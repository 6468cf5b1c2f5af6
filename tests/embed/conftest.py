"""A tiny checkpoint and its config, shared by the embedding tests and (imported there) the export tests."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from conftest import make_tiny_cfg, numbered_frames, write_video

# ResNet-18 with a 16-d projector at 32 x 48, k = 2; frames from the PyAV reference decoder.
CFG = make_tiny_cfg("data.input_size=[32,48]", "data.frame_interval=2", "model.proj_dim=16", "model.pred_hidden=8",
                    "model.cld_dim=8", "embed.pipeline=torch")


def decoded_count(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def reference(model, video) -> np.ndarray:
    """The eager encoder on the reference live frames of ``video``: what every backend must reproduce."""
    from selfee.data import make_sources
    from selfee.embed import iter_embed_batches
    from selfee.video import probe

    (src,) = make_sources([probe(video)], CFG)
    live = torch.cat([b.frames for b in iter_embed_batches(src, CFG, 64)])
    with torch.no_grad():
        return model.encoder(live.float() / 255).numpy()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 37-frame 20 fps H.264 video with B-frames."""
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", numbered_frames(37), fps=20, g=8, bf=2)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(checkpoint path, eager model) of a seeded, untrained tiny Selfee."""
    from selfee.bench.embed import random_checkpoint
    from selfee.checkpoint import load_model

    path = random_checkpoint(CFG, tmp_path_factory.mktemp("weights") / "tiny.pt", seed=0)
    return path, load_model(path)[0]
