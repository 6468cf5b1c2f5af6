"""The reference loader: chunk plans, sampling modes, exact live frames, decode cost, determinism."""

import av
import numpy as np
import pytest
import torch

from conftest import numbered_frames, write_video
from selfee.augment import resize_uint8
from selfee.config import SelfeeConfig
from selfee.data import ReferenceLoader, Sampler, TorchPipeline, make_sources, plan_chunks, split_range
from selfee.live_frames import neighbor_indices
from selfee.video import frame_to_grey, probe


def cfg_for(**over):
    base = {
        "data.input_size": [32, 48],
        "data.frame_interval": 2,
        "data.pool_batches": 4,
        "data.chunk_frames": 16,
        "data.holdout_fraction": 0.1,
        "optim.batch_size": 8,
        "loss.clusters": 4,  # a valid run needs batch >= clusters
        "augment.enabled": False,
    }
    base.update(over)
    return SelfeeConfig.load(overrides=[f"{k}={v}" for k, v in base.items()])


@pytest.fixture(scope="module")
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


def test_chunks_partition_centres_and_start_at_keyframes(videos):
    cfg = cfg_for()
    (src,) = make_sources([probe(videos[0])], cfg)
    chunks = plan_chunks(0, src, k=2, chunk_frames=16, lo=0, hi=90)
    covered = np.concatenate([np.arange(c.center_start, c.center_stop) for c in chunks])
    assert (covered == np.arange(90)).all()
    for c in chunks[1:]:
        assert c.decode_start in src.info.keyframes  # decoding never starts mid-GOP
        assert c.decode_start == c.center_start - 2 and c.decode_stop == min(90, c.center_stop + 2)
    # all-intra-like short GOPs merge up to chunk_frames
    merged = plan_chunks(0, src, k=2, chunk_frames=40, lo=0, hi=90)
    assert len(merged) < len(chunks)


def test_splits_are_disjoint():
    assert split_range(100, 0.1, "train") == (0, 90) and split_range(100, 0.1, "eval") == (90, 100)
    assert split_range(100, 0.0, "eval") == (100, 100)


def test_live_frames_are_exact_and_batches_follow_the_mode(videos):
    cfg = cfg_for(**{"data.inner_shuffle": True})
    sources = make_sources([probe(v) for v in videos], cfg)
    refs = [reference_grey(v, (32, 48)) for v in videos]
    loader = ReferenceLoader(sources, cfg)
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
    cfg = cfg_for(**{"data.inner_shuffle": False, "data.pool_batches": 8})
    sources = make_sources([probe(v) for v in videos], cfg)
    loader = ReferenceLoader(sources, cfg)
    mixed = [len(b.video.unique()) > 1 for _, b in zip(range(8), loader)]
    loader.close()
    assert sum(mixed) >= 4


def test_rgb_mode(videos):
    cfg = cfg_for(**{"data.live_frames": False})
    sources = make_sources([probe(videos[0])], cfg)
    loader = ReferenceLoader(sources, cfg)
    batch = next(iter(loader))
    loader.close()
    with av.open(str(videos[0])) as c:
        rgb = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    ref = resize_uint8(torch.from_numpy(rgb).permute(0, 3, 1, 2), (32, 48))
    assert torch.equal(batch.frames, ref[batch.frame])


def test_decoder_work_per_sample_is_bounded(tmp_path):
    p = write_video(tmp_path / "long.mp4", numbered_frames(600), g=32)
    cfg = cfg_for(**{"data.chunk_frames": 32, "data.chunk_fraction": 0.5, "optim.batch_size": 32,
                     "data.pool_batches": 4, "data.holdout_fraction": 0})
    sources = make_sources([probe(p)], cfg)
    loader = ReferenceLoader(sources, cfg)
    for _, _b in zip(range(12), loader):
        pass
    loader.close()
    # a chunk of 32 frames costs 32 + 2k decoded frames and gives 16 samples
    assert loader.decoded_per_sample <= 2.4


def test_resumed_loader_yields_the_same_batches(videos):
    cfg = cfg_for()
    sources = make_sources([probe(v) for v in videos], cfg)
    a = ReferenceLoader(sources, cfg)
    first = [b for _, b in zip(range(7), a)]
    a.close()
    b = ReferenceLoader(sources, cfg, start_step=5)
    resumed = [x for _, x in zip(range(2), b)]
    b.close()
    for x, y in zip(first[5:], resumed):
        assert torch.equal(x.frames, y.frames) and torch.equal(x.frame, y.frame)


def test_rank_shards_are_disjoint_and_cover_everything(videos):
    cfg = cfg_for()
    sources = make_sources([probe(v) for v in videos], cfg)
    full = {c for cs in Sampler(sources, cfg).chunks for c in cs}
    r0 = {c for cs in Sampler(sources, cfg, rank=0, world=2).chunks for c in cs}
    r1 = {c for cs in Sampler(sources, cfg, rank=1, world=2).chunks for c in cs}
    assert r0 and r1 and not (r0 & r1) and (r0 | r1) == full


def test_pipeline_yields_augmented_views(videos):
    cfg = cfg_for(**{"augment.enabled": True, "train.channels_last": True})
    sources = make_sources([probe(v) for v in videos], cfg)
    pipe = TorchPipeline(sources, cfg, "cpu")
    batch = next(iter(pipe))
    pipe.close()
    assert batch.view1.shape == (8, 3, 32, 48) and batch.view1.dtype == torch.float32
    assert batch.view1.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(batch.view1, batch.view2)


def test_decoded_chunks_do_not_share_the_reused_frame_buffer(tmp_path):
    # Frames already at the working size and no preprocessing: nothing copies them on the way,
    # so the decoder must, or the next chunk would overwrite them in its buffer.
    from selfee.data import Chunk, ChunkDecoder

    path = write_video(tmp_path / "v.mp4", numbered_frames(40))
    cfg = SelfeeConfig.load(overrides=["augment.enabled=false", "data.input_size=[48,64]", "data.holdout_fraction=0"])
    dec = ChunkDecoder(make_sources([probe(path)], cfg), live=True, size=(48, 64))
    first = dec.decode(Chunk(0, 1, 15, 0, 16))
    kept = first.clone()
    dec.decode(Chunk(0, 17, 31, 16, 32))
    assert torch.equal(first, kept)
    ref = torch.stack([torch.from_numpy(frame_to_grey(f)) for f in av.open(str(path)).decode(video=0)][:16])
    assert torch.equal(first[:, 0], ref)
