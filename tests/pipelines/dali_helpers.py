"""Helpers shared by the DALI pipeline tests: small configs and videos of known content."""

from __future__ import annotations

import av
import numpy as np
import torch

from selfee.augment import resize_uint8
from selfee.config import SelfeeConfig
from selfee.video import frame_to_grey


def cfg_for(**over) -> SelfeeConfig:
    base = {
        "data.input_size": [32, 48],
        "data.frame_interval": 2,
        "data.pool_batches": 4,
        "data.chunk_frames": 16,
        "data.holdout_fraction": 0.1,
        "data.decode_threads": 1,
        "optim.batch_size": 8,
        "augment.enabled": False,
        "train.pipeline": "dali",
        "embed.pipeline": "dali",
    }
    base.update(over)
    return SelfeeConfig.load(overrides=[f"{k}={v}" for k, v in base.items()])


def textured_frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Moving bar over a fixed smooth texture: every frame differs and edges are not flat."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    tex = np.kron(base, np.ones((8, 8, 1)))[:h, :w]
    frames = np.repeat(tex[None], n, 0)
    for i in range(n):
        x = (i * 3) % (w - 8)
        frames[i, 4:-4, x : x + 8] = 250
        frames[i] += (i * 5) % 30
    return np.clip(frames, 0, 255).astype(np.uint8)


def decode_rgb(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def reference_grey(path, size) -> torch.Tensor:
    """T x h x w: every frame of ``path`` through the reference grey rule and resize."""
    with av.open(str(path)) as c:
        g = np.stack([frame_to_grey(f) for f in c.decode(video=0)])
    return resize_uint8(torch.from_numpy(g).unsqueeze(1), size)[:, 0]


def as_uint8(view: torch.Tensor) -> torch.Tensor:
    return (view * 255).round().to(torch.uint8)
