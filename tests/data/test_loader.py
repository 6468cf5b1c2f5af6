"""The block loader over PyAV: exact live frames, sampling modes, RGB, decode cost, resume, memory."""

import gc
import weakref
from contextlib import closing

import av
import numpy as np
import torch

from conftest import numbered_frames, write_video
from selfee.augment import resize_uint8
from selfee.data import BlockLoader, make_sources, split_range
from selfee.data import loader as loader_mod
from selfee.live_frames import neighbor_indices
from selfee.video import frame_to_grey, probe

from .conftest import loader_cfg, recipe_cfg, reference_grey


def test_live_frames_are_exact_and_batches_follow_the_mode(videos):
    cfg = loader_cfg(**{"data.inner_shuffle": True})
    sources = make_sources([probe(v) for v in videos], cfg)
    refs = [reference_grey(v, (32, 48)) for v in videos]
    loader = BlockLoader(sources, cfg)
    seen_videos = set()
    for _, batch in zip(range(24), loader):
        assert batch.frames.shape == (8, 3, 32, 48) and batch.frames.dtype == torch.uint8
        assert len(batch.video.unique()) == 1  # innerShuffle: one video per batch
        v = int(batch.video[0])
        seen_videos.add(v)
        n = sources[v].frames
        hi = split_range(n, 0.1, "train")[1]
        assert (batch.frame < hi).all()
        idx = neighbor_indices(batch.frame, 2, n)
        assert torch.equal(batch.frames, refs[v][idx])
    loader.close()
    assert seen_videos == {0, 1}


def test_shuffled_mode_mixes_videos(videos):
    cfg = loader_cfg(**{"data.inner_shuffle": False, "data.pool_batches": 8})
    sources = make_sources([probe(v) for v in videos], cfg)
    loader = BlockLoader(sources, cfg)
    mixed = [len(b.video.unique()) > 1 for _, b in zip(range(8), loader)]
    loader.close()
    assert sum(mixed) >= 4


def test_rgb_mode(videos):
    cfg = loader_cfg(**{"data.live_frames": False})
    sources = make_sources([probe(videos[0])], cfg)
    with closing(BlockLoader(sources, cfg)) as loader:
        batch = next(iter(loader))
    with av.open(str(videos[0])) as c:
        rgb = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    ref = resize_uint8(torch.from_numpy(rgb).permute(0, 3, 1, 2), (32, 48))
    assert torch.equal(batch.frames, ref[batch.frame])


def test_decoder_work_per_sample_is_bounded(tmp_path):
    p = write_video(tmp_path / "long.mp4", numbered_frames(600), g=32)
    cfg = loader_cfg(**{"data.chunk_frames": 32, "data.chunk_fraction": 0.5, "optim.batch_size": 32,
                     "data.pool_batches": 4, "data.holdout_fraction": 0})
    sources = make_sources([probe(p)], cfg)
    loader = BlockLoader(sources, cfg)
    for _, _b in zip(range(12), loader):
        pass
    loader.close()
    # a chunk of 32 frames costs 32 + 2k decoded frames and gives 16 samples
    assert loader.decoded_per_sample <= 2.4


def test_resumed_loader_yields_the_same_batches(videos):
    cfg = loader_cfg()
    sources = make_sources([probe(v) for v in videos], cfg)
    a = BlockLoader(sources, cfg)
    first = [b for _, b in zip(range(7), a)]
    a.close()
    b = BlockLoader(sources, cfg, start_step=5)
    resumed = [x for _, x in zip(range(2), b)]
    b.close()
    for x, y in zip(first[5:], resumed):
        assert torch.equal(x.frames, y.frames) and torch.equal(x.frame, y.frame)



def test_decoded_frames_per_sample_with_default_like_settings(tmp_path):
    # GOPs of 60 merge into chunks of 240 (chunk_frames 256): 120 samples each, a block of 24 x 32
    # needs 6.4 chunks; the last is decoded only as far as its samples need.
    videos = [write_video(tmp_path / f"v{i}.mp4", numbered_frames(900 + 100 * i, 24, 32), g=60) for i in range(3)]
    cfg = recipe_cfg(**{"optim.batch_size": 24, "data.inner_shuffle": False, "data.input_size": [16, 16]})
    assert (cfg.data.chunk_frames, cfg.data.chunk_fraction, cfg.data.pool_batches) == (256, 0.5, 32)
    loader = BlockLoader(make_sources([probe(v) for v in videos], cfg), cfg)
    for _, _b in zip(range(3 * 32), loader):
        pass
    loader.close()
    assert 1 / 0.5 <= loader.decoded_per_sample <= 1 / 0.5 + 0.1


def test_the_loader_holds_one_block_in_use_and_one_prepared(monkeypatch, tmp_path):
    cfg = recipe_cfg(**{"optim.batch_size": 8, "data.pool_batches": 3, "data.chunk_frames": 16})
    tiny = write_video(tmp_path / "t.mp4", numbered_frames(90), g=16)
    built: list[int] = []
    alive: list[weakref.ref] = []
    real_assemble = loader_mod.assemble

    def tracking_assemble(plan, *args, **kw):
        out = real_assemble(plan, *args, **kw)
        alive.append(weakref.ref(out))
        return out

    monkeypatch.setattr(loader_mod, "assemble", tracking_assemble)
    loader = BlockLoader(make_sources([probe(tiny)], cfg), cfg)
    real_build = loader._build
    loader._build = lambda b: (built.append(b), real_build(b))[1]
    try:
        for step, _batch in zip(range(12), loader):
            current = step // 3
            assert max(built) <= current + 1
            gc.collect()
            assert sum(r() is not None for r in alive) <= 2
    finally:
        loader.close()


def test_future_channel_at_the_end_repeats_the_current_frame(tmp_path):
    k, n = 2, 40
    v = write_video(tmp_path / "end.mp4", numbered_frames(n), g=16, crf=0)
    cfg = recipe_cfg(**{"data.holdout_fraction": 0, "data.frame_interval": k, "data.chunk_frames": 16,
                     "data.pool_batches": 4, "optim.batch_size": 10})
    with av.open(str(v)) as c:
        grey = np.stack([frame_to_grey(f) for f in c.decode(video=0)])
    ref = resize_uint8(torch.from_numpy(grey).unsqueeze(1), (32, 48))[:, 0]
    loader = BlockLoader(make_sources([probe(v)], cfg), cfg)
    edge = set()
    for _, batch in zip(range(8), loader):
        assert torch.equal(batch.frames, ref[neighbor_indices(batch.frame, k, n)])
        for x, t in zip(batch.frames, batch.frame.tolist()):
            if t >= n - k:
                edge.add(t)
                assert torch.equal(x[2], x[1]) and torch.equal(x[1], ref[t]) and torch.equal(x[0], ref[t - k])
    loader.close()
    assert edge == {n - 2, n - 1}

