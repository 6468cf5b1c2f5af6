"""Decoding chunks: the PyAV chunk source, and chunks that do not decode (the block is drawn again without their
video, reported once, the same whichever source stops where)."""

import logging

import av
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import numbered_frames, write_video
from selfee.augment import resize_uint8
from selfee.cli import app
from selfee.config import SelfeeConfig
from selfee.data import BlockLoader, Chunk, ChunkDecodeError, ChunkDecoder, make_sources, sample_size
from selfee.errors import SelfeeError
from selfee.live_frames import neighbor_indices
from selfee.video import frame_to_grey, probe

from .conftest import recipe_cfg


def test_decoded_chunks_do_not_share_the_reused_frame_buffer(tmp_path):
    # Frames already at the working size and no preprocessing: nothing copies them on the way,
    # so the decoder must, or the next chunk would overwrite them in its buffer.

    path = write_video(tmp_path / "v.mp4", numbered_frames(40))
    cfg = SelfeeConfig.load(overrides=["augment.enabled=false", "data.input_size=[48,64]", "data.holdout_fraction=0"])
    dec = ChunkDecoder(make_sources([probe(path)], cfg), live=True, size=(48, 64))
    first = dec.decode(Chunk(0, 1, 15, 0, 16))
    kept = first.clone()
    dec.decode(Chunk(0, 17, 31, 16, 32))
    assert torch.equal(first, kept)
    ref = torch.stack([torch.from_numpy(frame_to_grey(f)) for f in av.open(str(path)).decode(video=0)][:16])
    assert torch.equal(first[:, 0], ref)



def _messages(caplog, name):
    return [r.getMessage() for r in caplog.records if name in r.getMessage()]


@pytest.mark.parametrize("inner", [True, False])
def test_a_video_that_fails_mid_run_is_left_out_and_resume_stays_exact(damaged, inner, caplog):
    cfg = recipe_cfg(**{"optim.batch_size": 8, "data.pool_batches": 4, "data.chunk_frames": 16,
                     "data.frame_interval": 2, "data.inner_shuffle": inner})
    sources = make_sources([probe(damaged.good), probe(damaged.half)], cfg)
    with caplog.at_level(logging.WARNING, logger="selfee"):
        a = BlockLoader(sources, cfg)
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
        r = BlockLoader(sources, cfg, start_step=start)
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
    # A chunk source may raise the first ChunkDecodeError only (the DALI lanes do); the loader then tries the
    # rest of the draw itself, so which videos a block leaves out is the same as with PyAV's source.
    cfg = recipe_cfg(**{"optim.batch_size": 8, "data.pool_batches": 4, "data.chunk_frames": 16,
                     "data.inner_shuffle": False})
    sources = make_sources([probe(damaged.good), probe(damaged.half)], cfg)

    class FirstFailure(ChunkDecoder):
        """A chunk source that stops at the first chunk that does not decode."""

        def decode_many(self, chunks):
            return [self.decode(c) for c in chunks]

    ref = BlockLoader(sources, cfg)
    other = BlockLoader(sources, cfg, decoder=FirstFailure(sources, cfg.data.live_frames, sample_size(cfg)))
    for (_, x), y in zip(zip(range(24), ref), other):
        assert torch.equal(x.frame, y.frame) and torch.equal(x.video, y.video) and torch.equal(x.frames, y.frames)
    ref.close()
    other.close()
    assert ref.sampler.bad_chunks == other.sampler.bad_chunks != set()


def test_when_every_video_fails_training_stops_with_one_line(damaged):
    cfg = recipe_cfg(**{"optim.batch_size": 8, "data.pool_batches": 2, "data.chunk_frames": 16})
    loader = BlockLoader(make_sources([probe(damaged.zeroed)], cfg), cfg)
    with pytest.raises(SelfeeError, match="every video of the 'train' split failed to decode") as exc:
        next(iter(loader))
    loader.close()
    assert not isinstance(exc.value, ChunkDecodeError) and "\n" not in str(exc.value)


@pytest.mark.parametrize("bad", ["zeroed", "half"])
def test_train_cli_reports_a_damaged_video_once_and_trains_on(damaged, bad, tmp_path, tiny_config):
    extra = ["-s", "data.chunk_frames=16", "-s", "data.inner_shuffle=false"] if bad == "half" else []
    path = getattr(damaged, bad)
    args = ["--config", str(tiny_config()), "--steps", "3", *extra]
    r = CliRunner().invoke(app, ["train", str(damaged.good), str(path), "--out", str(tmp_path / "run"), *args])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if f"{bad}.mp4" in ln]
    assert len(lines) == 1, r.output
    assert "Traceback" not in r.output and (tmp_path / "run" / "last.pt").exists()

