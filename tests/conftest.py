"""Shared fixtures: tiny configs, small generated videos, the optional real data in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SELFEE_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_configure(config):
    torch.set_num_threads(min(2, torch.get_num_threads()))


# The smallest configuration that still runs every part of training and embedding on a CPU in seconds.
TINY = (
    "model.arch=resnet18", "model.proj_dim=32", "model.pred_hidden=8", "model.cld_dim=16", "model.init=none",
    "loss.clusters=3", "optim.batch_size=8", "data.input_size=[32,32]", "data.frame_interval=1",
    "data.pool_batches=2", "data.chunk_frames=16", "train.log_every=1", "train.tensorboard=false",
    "train.eval_every=0", "train.device=cpu", "train.pipeline=torch", "train.embed_bn_frames=32",
    "embed.batch_size=16",
)


def make_tiny_cfg(*sets: str, **overrides):
    """The tiny test configuration with ``section.field=value`` strings and/or keyword overrides
    (``optim__steps=3`` sets ``optim.steps``) applied on top."""
    from selfee.config import SelfeeConfig

    extra = [f"{k.replace('__', '.')}={_yaml_value(v)}" for k, v in overrides.items()]
    return SelfeeConfig.load(overrides=[*TINY, *sets, *extra])


def _yaml_value(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_yaml_value(x) for x in v) + "]"
    return str(v)


@pytest.fixture
def tiny_cfg():
    """``tiny_cfg(*sets, **overrides)``: see :func:`make_tiny_cfg`."""
    return make_tiny_cfg


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real third-party videos and labels); tests using it skip when it is absent."""
    if not (SHARED_DATA / "videos").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def real_video(shared: Path, name: str) -> Path:
    p = shared / "videos" / name
    if not p.is_file():
        pytest.skip(f"{p} not present")
    return p


def write_video(path: Path, frames: np.ndarray, fps: int = 25, codec: str = "libx264", pix_fmt: str = "yuv420p",
                **options) -> Path:
    """Encode T x H x W x 3 uint8 frames (small test videos, made in tmp_path) with the project's writer."""
    from selfee.video import VideoWriter

    opts = {"g": 16, "bf": 0, "sc_threshold": 0} if codec == "libx264" else {}
    opts.update(options)
    with VideoWriter(path, fps, codec, pix_fmt, options=opts) as out:
        out.write_many(frames)
    return path


def numbered_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frames whose content encodes their index (a bright bar at a position that moves), for order checks."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    for i in range(n):
        frames[i, :, :, :] = (i * 7) % 200 + 20
        x = (i * 3) % (w - 8)
        frames[i, 4:-4, x : x + 8, :] = 250
    return frames


@pytest.fixture
def tiny_video(tmp_path) -> Path:
    """A 60-frame 64x48 H.264 video with lossless-ish content (crf 0)."""
    return write_video(tmp_path / "tiny.mp4", numbered_frames(60), crf=0)
