"""Shared by the data tests: two small configs, two short videos, damaged videos, reference decoders."""

import struct
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch

from conftest import make_tiny_cfg, numbered_frames, write_video
from selfee.augment import resize_uint8
from selfee.config import SelfeeConfig
from selfee.data import VideoSource
from selfee.errors import VideoError
from selfee.video import VideoReader, frame_to_grey, probe

DEFAULTS = SelfeeConfig().data


def loader_cfg(**over):
    """The tiny config at 32 x 48, k = 2, blocks of 4 batches of 8 from 16-frame chunks, 10 % held out, no augmentation."""
    base = {"data.input_size": [32, 48], "data.frame_interval": 2, "data.pool_batches": 4, "data.chunk_frames": 16,
            "data.holdout_fraction": 0.1, "optim.batch_size": 8, "augment.enabled": False}
    base.update(over)
    return make_tiny_cfg(**{k.replace(".", "__"): v for k, v in base.items()})


def recipe_cfg(**over):
    """The paper's recipe (the default sampling settings) at 32 x 48, no augmentation."""
    base = {"data.input_size": [32, 48], "augment.enabled": False, "loss.clusters": 3}
    base.update(over)
    return SelfeeConfig.load(overrides=[f"{k}={v}" for k, v in base.items()])


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("vids")
    a = write_video(d / "a.mp4", numbered_frames(90), g=16, crf=0)
    b = write_video(d / "b.mp4", numbered_frames(70)[::-1].copy(), g=16, crf=0)
    return [a, b]


def reference_grey(path, size):
    """Every frame through the reference grey rule and resize, decoded sequentially."""
    with av.open(str(path)) as c:
        g = np.stack([frame_to_grey(f) for f in c.decode(video=0)])
    return resize_uint8(torch.from_numpy(g).unsqueeze(1), size)[:, 0]


def fake_source(i: int, n: int, gop: int) -> VideoSource:
    """A probed video as the sampler sees it (frame count and keyframes), without a file."""
    info = SimpleNamespace(keyframes=np.arange(0, n, gop), path=Path(f"v{i}.mp4"))
    return VideoSource(info, SimpleNamespace(frames=n, start=0))


def zero_mdat(src: Path, dst: Path, keep: float = 0.0) -> Path:
    """Copy an MP4 with its sample data (the mdat payload) zeroed after its first ``keep`` share:
    the packets stay readable (``probe`` passes), the frames there do not decode."""
    data = bytearray(src.read_bytes())
    i = 0
    while i + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[i : i + 8])
        hdr = 8
        if size == 1:
            size, hdr = struct.unpack(">Q", data[i + 8 : i + 16])[0], 16
        elif size == 0:
            size = len(data) - i
        if kind == b"mdat":
            a = i + hdr + int(keep * (size - hdr))
            data[a : i + size] = bytes(i + size - a)
        i += size
    dst.write_bytes(bytes(data))
    return dst


def decodes(path: Path, start: int, stop: int) -> bool:
    try:
        return VideoReader(path).read(start, stop).shape[0] == stop - start
    except VideoError:
        return False


@pytest.fixture(scope="session")
def damaged(tmp_path_factory):
    """good.mp4, zeroed.mp4 (no frame decodes) and half.mp4 (its first GOPs decode, the rest not)."""
    d = tmp_path_factory.mktemp("damaged")
    good = write_video(d / "good.mp4", numbered_frames(120), g=16, crf=0)
    other = write_video(d / "other.mp4", numbered_frames(128)[::-1].copy(), g=16, crf=0)
    zeroed = zero_mdat(good, d / "zeroed.mp4")
    half = zero_mdat(other, d / "half.mp4", keep=0.3)
    assert probe(zeroed).frames == 120 and not decodes(zeroed, 0, 1)
    assert decodes(half, 0, 16) and not decodes(half, 96, 112)
    return SimpleNamespace(good=good, zeroed=zeroed, half=half, dir=d)
