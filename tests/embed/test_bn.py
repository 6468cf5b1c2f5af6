"""The embedding's BatchNorm frames: plain frames spread over the whole video, not a few chunks of it."""

import itertools

import numpy as np
import torch

from conftest import make_tiny_cfg, write_video
from selfee.data import make_sources
from selfee.embed.bn import plain_frames
from selfee.video import probe_many


def _chunk_of(batch: torch.Tensor) -> list[int]:
    """The chunk each live frame comes from (every chunk of the test video has its own grey level; frames in [0, 1])."""
    return ((batch[:, 1].float().mean(dim=(1, 2)) * 255 - 20) / 10).round().long().tolist()


def test_plain_frames_are_spread_over_the_whole_video(tmp_path):
    """A few hundred BatchNorm frames must not come from the two or three chunks that training's chunk fraction
    would give them (the tiny preset's 256 frames were 20 s of a 2-minute video)."""
    n_chunks, g = 20, 16
    frames = np.zeros((n_chunks * g, 32, 32, 3), np.uint8)
    for c in range(n_chunks):
        frames[c * g:(c + 1) * g] = 20 + 10 * c  # every keyframe interval (chunk) has its own grey level
    video = write_video(tmp_path / "v.mp4", frames, g=g, crf=0)
    cfg = make_tiny_cfg("train.embed_bn_frames=32", "data.holdout_fraction=0")
    infos, _ = probe_many([video], min_frames=3)
    batches = list(itertools.islice(plain_frames(cfg, make_sources(infos, cfg), torch.device("cpu")), 4))  # 4 x 8
    chunks = _chunk_of(torch.cat(batches))
    # training's chunk fraction (0.5) would take 8 frames of each of 4 chunks; spread: 2 of each of 16
    assert len(chunks) == 32 and len(set(chunks)) >= 12
    assert all(len(set(_chunk_of(b))) > 2 for b in batches)  # and every batch mixes chunks
