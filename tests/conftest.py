"""Shared fixtures: tiny configs, small generated videos and embeddings, the optional real data in ../shared/data.

Markers by rule (:func:`pytest_collection_modifyitems`), so that ``-m`` selects without per-file marks:
tests using ``shared_data`` are ``realdata``; tests under tests/pipelines are ``dali``; ``gpu`` and
``trt`` tests, marked where they are written, are skipped without a CUDA GPU / TensorRT.
"""

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


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    from selfee._deps import available

    pipelines = REPO / "tests" / "pipelines"
    no_gpu = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA GPU")
    no_trt = None if available("tensorrt") else pytest.mark.skip(reason="needs TensorRT")
    for item in items:
        if "shared_data" in item.fixturenames:
            item.add_marker(pytest.mark.realdata)
        if item.path.is_relative_to(pipelines):
            item.add_marker(pytest.mark.dali)
        if no_gpu and item.get_closest_marker("gpu"):
            item.add_marker(no_gpu)
        if no_trt and item.get_closest_marker("trt"):
            item.add_marker(no_trt)


@pytest.fixture(autouse=True)
def _strict_on_gpu(request, monkeypatch):
    """``gpu`` and ``trt`` tests run strict (``SELFEE_STRICT=1``): a fast path that is not taken fails them,
    instead of passing on the fallback's results."""
    if request.node.get_closest_marker("gpu") or request.node.get_closest_marker("trt"):
        monkeypatch.setenv("SELFEE_STRICT", "1")


@pytest.fixture(autouse=True)
def _session_cache(tmp_path_factory, monkeypatch):
    """Cached exports and backend choices go to a folder of the test session, never the user's cache."""
    monkeypatch.setenv("SELFEE_CACHE", str(tmp_path_factory.getbasetemp() / "selfee-cache"))


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


@pytest.fixture
def tiny_config(tmp_path):
    """``tiny_config(*sets, **overrides)``: :func:`make_tiny_cfg` written as YAML, its path (for ``--config``)."""

    def write(*sets: str, **overrides) -> Path:
        path = tmp_path / "tiny.yaml"
        path.write_text(make_tiny_cfg(*sets, **overrides).to_yaml())
        return path

    return write


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
def rng():
    return np.random.default_rng(0)


def write_embed(d: Path, stem: str, x: np.ndarray, frames: np.ndarray | None = None, fps: float = 30.0,
                dtype=np.float32) -> Path:
    """``<stem>.npy`` + ``<stem>.csv`` as `selfee-fast embed` writes them."""
    d.mkdir(parents=True, exist_ok=True)
    frames = np.arange(len(x)) if frames is None else np.asarray(frames)
    np.save(d / f"{stem}.npy", np.asarray(x, dtype=dtype))
    with open(d / f"{stem}.csv", "w") as fh:
        fh.write("frame,time_s\n")
        for f in frames:
            fh.write(f"{int(f)},{(f - frames[0]) / fps:.6f}\n")
    return d / f"{stem}.npy"


def cluster_sequence(rng, centers: np.ndarray, states: np.ndarray, noise: float = 0.05) -> np.ndarray:
    """Frames drawn around the centre of each frame's state."""
    return centers[states] + noise * rng.standard_normal((len(states), centers.shape[1]))


def bouts(rng, n: int, k: int, mean_len: int = 30) -> np.ndarray:
    """A state sequence of n frames made of bouts of random states (consecutive bouts differ)."""
    out, s = [], int(rng.integers(k))
    while sum(len(b) for b in out) < n:
        out.append(np.full(int(rng.integers(mean_len // 2, mean_len * 3 // 2 + 1)), s))
        s = (s + 1 + int(rng.integers(k - 1))) % k
    return np.concatenate(out)[:n]


def arena_video(path: Path, n: int = 40, fps: int = 10) -> tuple[Path, np.ndarray]:
    """A fixed textured floor with a bright square moving across it: the mean is nearly the floor."""
    rng = np.random.default_rng(0)
    floor = np.kron(rng.integers(60, 120, (6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    frames = np.repeat(floor[None], n, 0)
    for i in range(n):
        x = (i * 5) % 56
        frames[i, 20:28, x : x + 8] = 240
    return write_video(path, frames, fps=fps, crf=0), floor


@pytest.fixture
def tiny_video(tmp_path) -> Path:
    """A 60-frame 64x48 H.264 video with lossless-ish content (crf 0)."""
    return write_video(tmp_path / "tiny.mp4", numbered_frames(60), crf=0)
