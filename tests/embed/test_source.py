"""The frames to embed: every decoded frame exactly once and in order, exact live frames, indices and times."""

import av
import numpy as np
import pytest
import torch

from conftest import numbered_frames, write_video
from selfee.augment import resize_uint8
from selfee.data import make_sources
from selfee.embed import iter_embed_batches
from selfee.live_frames import neighbor_indices
from selfee.video import frame_to_grey, probe

from .conftest import CFG


def decode_rgb(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.mark.parametrize("n, batch", [(53, 16), (7, 4), (5, 64)])
def test_every_frame_once_in_order_with_exact_live_frames(tmp_path, n, batch):
    p = write_video(tmp_path / "v.mp4", numbered_frames(n), fps=20, g=8, bf=2)
    with av.open(str(p)) as c:
        grey = np.stack([frame_to_grey(f) for f in c.decode(video=0)])
    (src,) = make_sources([probe(p)], CFG)
    batches = list(iter_embed_batches(src, CFG, batch, decode_block=5))
    frames = torch.cat([b.frame for b in batches])
    assert frames.tolist() == list(range(len(grey)))  # exactly what PyAV decodes, in order
    assert all(len(b.frame) == batch for b in batches[:-1])
    n_frames = len(grey)
    grey = resize_uint8(torch.from_numpy(grey).unsqueeze(1), (32, 48))[:, 0]
    live = torch.cat([b.frames for b in batches])
    assert torch.equal(live, grey[neighbor_indices(torch.arange(n_frames), 2, n_frames)])
    times = torch.cat([b.time_s for b in batches])
    assert times[:3].tolist() == pytest.approx([0.0, 0.05, 0.1])


def test_rgb_mode_and_time_window(tmp_path):
    p = write_video(tmp_path / "v.mp4", numbered_frames(40), fps=10, g=8)
    cfg = CFG.replace(**{"data.live_frames": False, "data.preprocess.start_s": 1.0, "data.preprocess.duration_s": 2.0})
    (src,) = make_sources([probe(p)], cfg)
    batches = list(iter_embed_batches(src, cfg, 8))
    frames = torch.cat([b.frame for b in batches])
    assert frames.tolist() == list(range(10, 30))
    rgb = decode_rgb(p)
    ref = resize_uint8(torch.from_numpy(rgb).permute(0, 3, 1, 2), (32, 48))[10:30]
    assert torch.equal(torch.cat([b.frames for b in batches]), ref)
