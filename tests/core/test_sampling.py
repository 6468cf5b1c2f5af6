"""Training data sampling: mixing of the block pool, decode cost, memory in flight, and videos that
cannot be used (bad windows, damaged data) in multi-video runs."""

import gc
import logging
import math
import shutil
import struct
import weakref
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import numbered_frames, write_video
from selfee import data as data_mod
from selfee.augment import resize_uint8
from selfee.cli import app
from selfee.config import SelfeeConfig
from selfee.data import (
    ChunkDecodeError,
    ReferenceLoader,
    Sampler,
    VideoSource,
    make_sources,
    split_range,
)
from selfee.errors import SelfeeError, VideoError
from selfee.live_frames import neighbor_indices
from selfee.video import VideoReader, frame_to_grey, open_inputs, probe, probe_many

DEFAULTS = SelfeeConfig().data


def cfg_for(**over):
    base = {"data.input_size": [32, 48], "augment.enabled": False, "loss.clusters": 3}
    base.update(over)
    return SelfeeConfig.load(overrides=[f"{k}={v}" for k, v in base.items()])


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


@pytest.fixture(scope="module")
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
    cfg = cfg_for(**{"optim.batch_size": 64, "data.pool_batches": 4, "data.chunk_frames": 32})
    sampler = Sampler([fake_source(0, 200, 30)], cfg)
    frames = torch.cat([bp.frame for bp in sampler.block(0).batches])
    lo, hi = split_range(200, cfg.data.holdout_fraction, "train")
    assert len(frames) == 256 > hi - lo and set(frames.tolist()) == set(range(lo, hi))


# ---------------------------------------------------------------------------------------------
# Decode cost: the last chunk of a block is decoded only as far as its samples need
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inner", [False, True])
def test_plans_take_exactly_what_they_need_from_the_last_chunk(inner):
    k = 2
    cfg = cfg_for(**{"optim.batch_size": 24, "data.frame_interval": k, "data.inner_shuffle": inner})
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


def test_decoded_frames_per_sample_with_default_like_settings(tmp_path):
    # GOPs of 60 merge into chunks of 240 (chunk_frames 256): 120 samples each, a block of 24 x 32
    # needs 6.4 chunks; the last is decoded only as far as its samples need.
    videos = [write_video(tmp_path / f"v{i}.mp4", numbered_frames(900 + 100 * i, 24, 32), g=60) for i in range(3)]
    cfg = cfg_for(**{"optim.batch_size": 24, "data.inner_shuffle": False, "data.input_size": [16, 16]})
    assert (cfg.data.chunk_frames, cfg.data.chunk_fraction, cfg.data.pool_batches) == (256, 0.5, 32)
    loader = ReferenceLoader(make_sources([probe(v) for v in videos], cfg), cfg)
    for _, _b in zip(range(3 * 32), loader):
        pass
    loader.close()
    assert 1 / 0.5 <= loader.decoded_per_sample <= 1 / 0.5 + 0.1


# ---------------------------------------------------------------------------------------------
# Memory: one block in use, one being prepared
# ---------------------------------------------------------------------------------------------


def test_the_loader_holds_one_block_in_use_and_one_prepared(monkeypatch, tmp_path):
    cfg = cfg_for(**{"optim.batch_size": 8, "data.pool_batches": 3, "data.chunk_frames": 16})
    tiny = write_video(tmp_path / "t.mp4", numbered_frames(90), g=16)
    built: list[int] = []
    alive: list[weakref.ref] = []
    real_assemble = data_mod.assemble

    def tracking_assemble(plan, *args, **kw):
        out = real_assemble(plan, *args, **kw)
        alive.append(weakref.ref(out))
        return out

    monkeypatch.setattr(data_mod, "assemble", tracking_assemble)
    loader = ReferenceLoader(make_sources([probe(tiny)], cfg), cfg)
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


# ---------------------------------------------------------------------------------------------
# Live frames at the end of a video (no holdout: the train split reaches the last frame)
# ---------------------------------------------------------------------------------------------


def test_future_channel_at_the_end_repeats_the_current_frame(tmp_path):
    k, n = 2, 40
    v = write_video(tmp_path / "end.mp4", numbered_frames(n), g=16, crf=0)
    cfg = cfg_for(**{"data.holdout_fraction": 0, "data.frame_interval": k, "data.chunk_frames": 16,
                     "data.pool_batches": 4, "optim.batch_size": 10})
    with av.open(str(v)) as c:
        grey = np.stack([frame_to_grey(f) for f in c.decode(video=0)])
    ref = resize_uint8(torch.from_numpy(grey).unsqueeze(1), (32, 48))[:, 0]
    loader = ReferenceLoader(make_sources([probe(v)], cfg), cfg)
    edge = set()
    for _, batch in zip(range(8), loader):
        assert torch.equal(batch.frames, ref[neighbor_indices(batch.frame, k, n)])
        for x, t in zip(batch.frames, batch.frame.tolist()):
            if t >= n - k:
                edge.add(t)
                assert torch.equal(x[2], x[1]) and torch.equal(x[1], ref[t]) and torch.equal(x[0], ref[t - k])
    loader.close()
    assert edge == {n - 2, n - 1}


# ---------------------------------------------------------------------------------------------
# Videos that cannot be used: one line each, the others go on
# ---------------------------------------------------------------------------------------------


def test_probe_many_with_decode_check_rejects_undecodable_data(damaged, caplog):
    plain, bad = probe_many([damaged.good, damaged.zeroed])
    assert len(plain) == 2 and not bad  # packets only: the zeroed file passes
    with caplog.at_level(logging.ERROR, logger="selfee"):
        infos, bad = probe_many([damaged.good, damaged.zeroed, damaged.half], decode_check=True)
    assert [i.path.name for i in infos] == ["good.mp4", "half.mp4"]
    assert len(bad) == 1 and "zeroed.mp4: cannot decode its first frame" in str(bad[0])
    assert [r.getMessage() for r in caplog.records] == [str(bad[0])]


def test_unusable_windows_and_rois_are_reported_per_video(damaged, tmp_path, caplog):
    names = ["short.mp4", "late.mp4", "roi.mp4"]
    for name in names:
        shutil.copy(damaged.good, tmp_path / name)
    good = shutil.copy(damaged.good, tmp_path / "fine.mp4")
    over = {
        "short.mp4": {"duration_s": 0.1},  # 3 frames at 25 fps, live frames need 2k+1 = 5
        "late.mp4": {"start_s": 60},  # past the end (4.8 s)
        "roi.mp4": {"roi": [500, 500, 10, 10]},  # outside the 64 x 48 frame
    }
    cfg = SelfeeConfig.load(overrides=[f"data.videos={over}".replace("'", '"')])
    with pytest.raises(VideoError, match="roi.mp4: roi"):
        make_sources([probe(tmp_path / "roi.mp4")], cfg)
    with caplog.at_level(logging.ERROR, logger="selfee"):
        inputs = open_inputs([tmp_path / n for n in names] + [good], cfg, min_frames=cfg.data.min_frames)
    assert [i.path.name for i in inputs.videos] == ["fine.mp4"]
    bad = inputs.failures
    msgs = [r.getMessage() for r in caplog.records]
    assert len(bad) == 3 and len(msgs) == 3 and msgs == [str(e) for e in bad]
    for name, msg in zip(names, msgs):
        assert msg.startswith(str(tmp_path / name) + ": ")
    assert "frames in the selected window" in msgs[0] and "past the end" in msgs[1] and "outside" in msgs[2]


def test_run_training_goes_on_without_unusable_windows(damaged, tmp_path):
    from selfee.train import run_training

    late = shutil.copy(damaged.good, tmp_path / "late.mp4")
    cfg = SelfeeConfig.load(preset="tiny", overrides=[
        "data.input_size=[32,32]", "optim.batch_size=8", "optim.steps=2", "train.eval_every=0",
        "model.proj_dim=32", "model.pred_hidden=8", "model.cld_dim=16", "loss.clusters=3", "train.device=cpu",
        "train.pipeline=torch", "train.tensorboard=false", 'data.videos={"late.mp4": {"start_s": 60}}'])
    summary = run_training(cfg, [damaged.good, late], tmp_path / "run", show_progress=False)
    assert summary["step"] == 2
    with pytest.raises(SelfeeError, match="none of the 1 videos can be used"):
        run_training(cfg, [late], tmp_path / "run2", show_progress=False)


def _messages(caplog, name):
    return [r.getMessage() for r in caplog.records if name in r.getMessage()]


@pytest.mark.parametrize("inner", [True, False])
def test_a_video_that_fails_mid_run_is_left_out_and_resume_stays_exact(damaged, inner, caplog):
    cfg = cfg_for(**{"optim.batch_size": 8, "data.pool_batches": 4, "data.chunk_frames": 16,
                     "data.frame_interval": 2, "data.inner_shuffle": inner})
    sources = make_sources([probe(damaged.good), probe(damaged.half)], cfg)
    with caplog.at_level(logging.WARNING, logger="selfee"):
        a = ReferenceLoader(sources, cfg)
        first = [b for _, b in zip(range(40), a)]
        a.close()
    assert len(_messages(caplog, "half.mp4")) == 1  # one line, the first time
    assert "half.mp4: decoding failed" in _messages(caplog, "half.mp4")[0]
    assert a.sampler.bad_chunks and {c.video for c in a.sampler.bad_chunks} == {1}
    used = torch.cat([b.video for b in first])
    assert (used == 0).any()
    # the frames of the damaged video that were used are right; none comes from where it fails
    ref = {v: reference_live(p) for v, p in enumerate([damaged.good, damaged.half])}
    assert len(ref[1]) < sources[1].frames  # (decoding it in order stops where the data is zeroed)
    for b in first:
        for v in b.video.unique().tolist():
            m = b.video == v
            live = neighbor_indices(b.frame[m], 2, sources[v].frames)
            assert live.max() < len(ref[v]) and torch.equal(b.frames[m], ref[v][live])
    # a resumed loader learns the failures again, and draws the same blocks
    for start in (13, 26):
        r = ReferenceLoader(sources, cfg, start_step=start)
        resumed = [b for _, b in zip(range(40 - start), r)]
        r.close()
        for x, y in zip(first[start:], resumed):
            assert torch.equal(x.frame, y.frame) and torch.equal(x.video, y.video) and torch.equal(x.frames, y.frames)


def reference_live(path, size=(32, 48)):
    frames = []
    try:
        with av.open(str(path)) as c:
            for f in c.decode(video=0):
                frames.append(frame_to_grey(f))
    except av.error.FFmpegError:
        pass
    g = torch.from_numpy(np.stack(frames)).unsqueeze(1)
    return resize_uint8(g, size)[:, 0]


def test_a_decoder_that_stops_at_the_first_failure_draws_the_same_blocks(damaged):
    # The DALI lanes raise the first ChunkDecodeError only; the loader then tries the rest of the
    # draw itself, so which videos a block leaves out is the same as for the reference lane.
    cfg = cfg_for(**{"optim.batch_size": 8, "data.pool_batches": 4, "data.chunk_frames": 16,
                     "data.inner_shuffle": False})
    sources = make_sources([probe(damaged.good), probe(damaged.half)], cfg)

    class FirstFailure(ReferenceLoader):
        def _build(self, b):
            plan = self.sampler.block(b)
            decoded = list(self._pool.map(self.decoder.decode, plan.chunks))  # raises the first failure
            return plan, data_mod.assemble(plan, decoded, self.sources, 2, True)

    ref, other = ReferenceLoader(sources, cfg), FirstFailure(sources, cfg)
    for (_, x), y in zip(zip(range(24), ref), other):
        assert torch.equal(x.frame, y.frame) and torch.equal(x.video, y.video) and torch.equal(x.frames, y.frames)
    ref.close()
    other.close()
    assert ref.sampler.bad_chunks == other.sampler.bad_chunks != set()


def test_when_every_video_fails_training_stops_with_one_line(damaged):
    cfg = cfg_for(**{"optim.batch_size": 8, "data.pool_batches": 2, "data.chunk_frames": 16})
    loader = ReferenceLoader(make_sources([probe(damaged.zeroed)], cfg), cfg)
    with pytest.raises(SelfeeError, match="every video of the 'train' split failed to decode") as exc:
        next(iter(loader))
    loader.close()
    assert not isinstance(exc.value, ChunkDecodeError) and "\n" not in str(exc.value)


TINY = ["--preset", "tiny", "-s", "data.input_size=[32,32]", "-s", "optim.batch_size=8", "-s", "train.eval_every=0",
        "-s", "model.proj_dim=32", "-s", "model.pred_hidden=8", "-s", "model.cld_dim=16", "-s", "loss.clusters=3",
        "-s", "train.tensorboard=false", "--device", "cpu", "--pipeline", "torch", "--steps", "3"]


@pytest.mark.parametrize("bad", ["zeroed", "half"])
def test_train_cli_reports_a_damaged_video_once_and_trains_on(damaged, bad, tmp_path):
    extra = ["-s", "data.chunk_frames=16", "-s", "data.inner_shuffle=false"] if bad == "half" else []
    path = getattr(damaged, bad)
    r = CliRunner().invoke(app, ["train", str(damaged.good), str(path), "--out", str(tmp_path / "run"), *TINY, *extra])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if f"{bad}.mp4" in ln]
    assert len(lines) == 1, r.output
    assert "Traceback" not in r.output and (tmp_path / "run" / "last.pt").exists()
