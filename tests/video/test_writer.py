"""The one video writer: frames round-trip, odd sides padded, timestamps of its own, the MPEG-4 fallback."""

import logging
from fractions import Fraction

import av
import numpy as np
import pytest

from conftest import numbered_frames
from selfee.video import VideoReader, VideoWriter, probe
from selfee.video import writer as writer_module


def test_frames_round_trip_with_their_count_rate_and_size(tmp_path):
    frames = numbered_frames(12, 48, 64)
    with VideoWriter(tmp_path / "v.mp4", 30, crf=0, pix_fmt="yuv444p") as w:
        w.write_many(frames)
    assert w.frames == 12
    info = probe(tmp_path / "v.mp4")
    assert (info.frames, info.width, info.height, info.codec) == (12, 64, 48, "h264")
    assert info.fps == pytest.approx(30)
    got = VideoReader(info).read(0, 12)
    assert np.abs(got.astype(int) - frames).max() <= 2  # lossless H.264; RGB <-> YUV rounding only


def test_odd_sides_are_padded_by_repeating_the_last_row_and_column(tmp_path):
    rng = np.random.default_rng(0)
    grey = np.kron(rng.integers(0, 256, (7, 9)), np.ones((5, 5))).astype(np.uint8)[:33, :45]  # 33 x 45 blocks
    frame = np.repeat(grey[..., None], 3, axis=2)  # grey: 4:2:0 chroma has nothing to lose
    with VideoWriter(tmp_path / "odd.mp4", 25, crf=0) as w:
        w.write_many([frame] * 3)
    info = probe(tmp_path / "odd.mp4")
    assert (info.height, info.width) == (34, 46)
    got = VideoReader(info).read(0, 1)[0].astype(int)
    padded = np.pad(frame, ((0, 1), (0, 1), (0, 0)), mode="edge").astype(int)
    assert np.abs(got - padded).max() <= 2  # lossless luma; RGB <-> YUV rounding only


def test_timestamps_of_their_own_give_a_variable_rate(tmp_path):
    with VideoWriter(tmp_path / "vfr.mkv", 25, time_base=Fraction(1, 1000), options={"bf": 0}) as w:
        for pts, frame in zip((0, 40, 100, 180), numbered_frames(4)):
            w.write(frame, pts=pts)
    info = probe(tmp_path / "vfr.mkv")
    assert info.times(range(4)).tolist() == pytest.approx([0.0, 0.04, 0.1, 0.18])
    assert info.vfr


def test_without_libx264_the_writer_says_so_once_and_writes_mpeg4(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(av, "codecs_available", set(av.codecs_available) - {"libx264"})
    writer_module._say_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger="selfee"):
        for name in ("a.mp4", "b.mp4"):
            with VideoWriter(tmp_path / name, 25, crf=0, options={"preset": "veryfast"}) as w:
                w.write_many(numbered_frames(5))
    writer_module._say_fallback.cache_clear()
    assert w.codec == "mpeg4" and w.options == {"qmin": "1", "qmax": "1"}  # crf 0 -> the best quantiser; x264 options gone
    assert probe(tmp_path / "b.mp4").codec == "mpeg4" and probe(tmp_path / "b.mp4").frames == 5
    assert caplog.text.count("no libx264 encoder") == 1
