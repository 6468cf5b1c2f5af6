"""Chunks, block plans and the sampler: keyframe-aligned chunks, splits, rank shards, what a batch is made of."""

import math

import numpy as np
import pytest
import torch

from selfee.config import SelfeeConfig
from selfee.data import Sampler, make_sources, plan_chunks, split_range
from selfee.live_frames import neighbor_indices
from selfee.video import probe

from .conftest import DEFAULTS, fake_source, loader_cfg, recipe_cfg


def test_chunks_partition_centres_and_start_at_keyframes(videos):
    cfg = loader_cfg()
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


def test_rank_shards_are_disjoint_and_cover_everything(videos):
    cfg = loader_cfg()
    sources = make_sources([probe(v) for v in videos], cfg)
    full = {c for cs in Sampler(sources, cfg).chunks for c in cs}
    r0 = {c for cs in Sampler(sources, cfg, rank=0, world=2).chunks for c in cs}
    r1 = {c for cs in Sampler(sources, cfg, rank=1, world=2).chunks for c in cs}
    assert r0 and r1 and not (r0 & r1) and (r0 | r1) == full



# ---------------------------------------------------------------------------------------------
# Mixing: what a batch is made of, with the default pool settings
# ---------------------------------------------------------------------------------------------


def realistic_sampler(batch: int, inner: bool, pool: int = DEFAULTS.pool_batches) -> Sampler:
    """Six 10-minute 30-fps videos with GOPs of 60-250 frames; the default chunk and pool settings."""
    gops = [60, 90, 120, 150, 250, 250]
    cfg = SelfeeConfig.load(overrides=[f"optim.batch_size={batch}", f"data.inner_shuffle={inner}",
                                       f"data.pool_batches={pool}"])
    return Sampler([fake_source(i, 18000, g) for i, g in enumerate(gops)], cfg)


def chunk_counts(sampler: Sampler, blocks: int = 6) -> list[int]:
    """For every batch: how many of its samples come from its most represented chunk."""
    return [int(torch.bincount(bp.chunk).max()) for b in range(blocks) for bp in sampler.block(b).batches]


@pytest.mark.parametrize("inner", [False, True])
@pytest.mark.parametrize("batch", [32, 256])
def test_a_batch_holds_few_samples_of_any_one_chunk(batch, inner):
    # A whole chunk gives chunk_frames * chunk_fraction samples to a pool of pool_batches batches,
    # so about this many land in one batch (hypergeometric; the largest of ~B/4 chunks is ~2x it).
    # With innerShuffle a video's chunks feed only its share of the block's batches.
    share = DEFAULTS.inner_shuffle_videos if inner else 1
    per_batch = math.ceil(DEFAULTS.chunk_frames * DEFAULTS.chunk_fraction / DEFAULTS.pool_batches) * share
    assert per_batch <= 8
    counts = chunk_counts(realistic_sampler(batch, inner))
    assert max(counts) <= 4 * per_batch
    assert np.mean(counts) <= 2.5 * per_batch
    # the bound is one the former default (8 batches per pool: ~16 per chunk) does not meet
    assert np.mean(chunk_counts(realistic_sampler(batch, inner, pool=8), blocks=2)) > 2.5 * per_batch


def test_shuffled_batches_mix_many_videos_and_inner_shuffle_keeps_one():
    mixed = realistic_sampler(256, inner=False)
    for b in range(4):
        for bp in mixed.block(b).batches:
            assert len(bp.video.unique()) >= 5  # of 6
            key = bp.video * 10**6 + bp.frame
            assert len(key.unique()) == len(key)  # no sample twice
    inner = realistic_sampler(256, inner=True)
    for b in range(4):
        for bp in inner.block(b).batches:
            assert len(bp.video.unique()) == 1


@pytest.mark.parametrize("videos", [1, 2, 4])
def test_inner_shuffle_interleaves_the_videos_of_a_block(videos):
    cfg = SelfeeConfig.load(overrides=["optim.batch_size=64", "data.inner_shuffle=true",
                                       f"data.inner_shuffle_videos={videos}"])
    sampler = Sampler([fake_source(i, 18000, 120) for i in range(6)], cfg)
    switches, seen = 0, []
    for b in range(6):
        order = [int(bp.video[0]) for bp in sampler.block(b).batches]
        assert all(len(bp.video.unique()) == 1 for bp in sampler.block(b).batches)
        assert len(set(order)) <= videos
        seen.append(len(set(order)))
        switches += sum(x != y for x, y in zip(order, order[1:]))
        key = torch.cat([bp.video * 10**6 + bp.frame for bp in sampler.block(b).batches])
        assert len(key.unique()) == len(key)  # no sample twice in a block
    if videos == 1:
        assert switches == 0
    else:  # batches of the block's videos come in a random order, not one video after the other
        assert max(seen) == videos and switches > 6 * (videos - 1) * 4


def test_a_block_uses_every_centre_before_repeating_one():
    # a video shorter than a block at chunk_fraction: all its centres, then repeats
    cfg = recipe_cfg(**{"optim.batch_size": 64, "data.pool_batches": 4, "data.chunk_frames": 32})
    sampler = Sampler([fake_source(0, 200, 30)], cfg)
    frames = torch.cat([bp.frame for bp in sampler.block(0).batches])
    lo, hi = split_range(200, cfg.data.holdout_fraction, "train")
    assert len(frames) == 256 > hi - lo and set(frames.tolist()) == set(range(lo, hi))


@pytest.mark.parametrize("inner", [False, True])
def test_plans_take_exactly_what_they_need_from_the_last_chunk(inner):
    k = 2
    cfg = recipe_cfg(**{"optim.batch_size": 24, "data.frame_interval": k, "data.inner_shuffle": inner})
    sources = [fake_source(i, n, g) for i, (n, g) in enumerate([(5000, 60), (4000, 250), (7000, 90)])]
    sampler = Sampler(sources, cfg)
    full = {c for cs in sampler.chunks for c in cs}
    frac = cfg.data.chunk_fraction
    decoded = samples = 0
    for b in range(8):
        plan = sampler.block(b)
        frames = torch.cat([bp.frame for bp in plan.batches])
        chunk = torch.cat([bp.chunk for bp in plan.batches])
        assert len(frames) == 24 * cfg.data.pool_batches
        shortened = [c for c in plan.chunks if c not in full]
        # at most one shortened chunk per pool (one pool per video of the block under innerShuffle): its last
        for c in shortened:
            assert c is [d for d in plan.chunks if d.video == c.video][-1]
        assert len(shortened) <= (cfg.data.inner_shuffle_videos if inner else 1)
        for ci, c in enumerate(plan.chunks):
            mine = frames[chunk == ci]
            assert len(mine) == len(mine.unique()) and len(mine) == (math.ceil(frac * c.size) if c in full else len(mine))
            assert c.center_start <= mine.min() and mine.max() < c.center_stop
            n = sources[c.video].frames
            live = neighbor_indices(mine, k, n)
            assert live.min() >= c.decode_start and live.max() < c.decode_stop  # decoded frames cover the samples
            if c not in full:  # a prefix of a planned chunk, decoded to k past its last centre
                whole = next(f for f in full if f.video == c.video and f.center_start == c.center_start)
                assert c.decode_start == whole.decode_start and c.center_stop < whole.center_stop
                assert c.decode_stop == min(n, c.center_stop + k) and len(mine) >= frac * c.size - 1
            decoded += c.decode_stop - c.decode_start
        samples += len(frames)
        again = sampler.block(b)
        assert again.chunks == plan.chunks and all(torch.equal(x.frame, y.frame) for x, y in zip(again.batches, plan.batches))
    assert decoded / samples <= 1 / frac + 0.1  # 2 + 2k / (chunk_frames * fraction) and a partial chunk

