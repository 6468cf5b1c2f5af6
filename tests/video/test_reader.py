"""PyAV reading: probing without decoding, frame-exact seeks, clear errors, the luma rule."""

import av
import numpy as np
import pytest

from conftest import numbered_frames, real_video, write_video
from selfee.errors import VideoError
from selfee.video import VideoReader, frame_to_grey, frame_to_rgb, probe


def decode_all(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_probe_counts_frames_and_keyframes(tmp_path):
    p = write_video(tmp_path / "v.mp4", numbered_frames(70), fps=30, g=16)
    info = probe(p)
    assert info.frames == 70 == len(decode_all(p))
    assert info.fps == pytest.approx(30)
    assert (info.width, info.height, info.codec) == (64, 48, "h264")
    assert info.keyframes.tolist() == [0, 16, 32, 48, 64]
    assert info.times([0, 30]).tolist() == pytest.approx([0.0, 1.0])
    assert info.index_at(1.0) == 30 and not info.vfr


def test_read_matches_sequential_decode_and_seeks_to_keyframes(tmp_path):
    p = write_video(tmp_path / "v.mp4", numbered_frames(70), g=16, bf=2)  # with B-frames
    ref = decode_all(p)
    r = VideoReader(p)
    got = r.read(37, 45)
    assert got.shape == (8, 48, 64, 3)
    for i in range(8):
        assert (got[i] == ref[37 + i]).all()
    assert r.frames_decoded <= (37 - 32) + 8 + 4  # from the keyframe at 32 (+ B-frame reordering)
    assert [i for i, _ in r.iter_frames(65)] == [65, 66, 67, 68, 69]
    assert r.read(0, 3).shape[0] == 3


@pytest.mark.parametrize("indices", [[4, 5, 7, 8], [4, 4, 5, 6], [6, 7], [5, 6, 6, 9, 10, 11]])
@pytest.mark.parametrize("grey", [True, False])
def test_read_repeats_the_predecessor_of_a_frame_that_did_not_decode(tmp_path, monkeypatch, indices, grey):
    """Rows as a list append would give them: a missing index repeats the previous row, an index seen
    twice gets two rows, nothing is filled before the first frame; frames from ``stop`` on are dropped."""
    p = write_video(tmp_path / "v.mp4", numbered_frames(16), g=4)
    r = VideoReader(p)
    frames = dict(r.frames(0))
    monkeypatch.setattr(r, "frames", lambda start: iter([(i, frames[i]) for i in indices]))
    convert = frame_to_grey if grey else frame_to_rgb
    ref, expected = [], 4
    for i in indices:
        if i >= 10:
            break
        arr = convert(frames[i])
        while expected < i and ref:
            ref.append(ref[-1])
            expected += 1
        ref.append(arr)
        expected = i + 1
    got = r.read(4, 10, grey=grey)
    assert got.shape == (len(ref), *ref[0].shape)
    assert all((g == f).all() for g, f in zip(got, ref))


@pytest.mark.parametrize("codec, suffix, pix", [("mpeg4", ".avi", "yuv420p"), ("libvpx-vp9", ".webm", "yuv420p"),
                                                ("mjpeg", ".avi", "yuvj420p")])
def test_other_codecs(tmp_path, codec, suffix, pix):
    try:
        p = write_video(tmp_path / f"v{suffix}", numbered_frames(20), codec=codec, pix_fmt=pix)
    except Exception as exc:  # encoder missing from this FFmpeg build
        pytest.skip(f"{codec} encoder unavailable: {exc}")
    info = probe(p)
    assert info.frames == 20
    assert VideoReader(info).read(5, 9).shape[0] == 4


def test_bad_inputs_have_one_line_reasons(tmp_path):
    cases = {}
    cases["missing"] = tmp_path / "missing.mp4"
    (tmp_path / "empty.mp4").write_bytes(b"")
    cases["empty"] = tmp_path / "empty.mp4"
    (tmp_path / "notes.mp4").write_text("this is not a video\n" * 50)
    cases["text"] = tmp_path / "notes.mp4"
    cases["dir"] = tmp_path
    msgs = {}
    for name, p in cases.items():
        with pytest.raises(VideoError) as e:
            probe(p)
        msgs[name] = str(e.value)
        assert "\n" not in msgs[name] and str(p) in msgs[name]
    assert "not found" in msgs["missing"] and "empty" in msgs["empty"] and "directory" in msgs["dir"]


def test_truncated_video_is_read_as_far_as_it_goes(tmp_path):
    p = write_video(tmp_path / "v.mp4", numbered_frames(60), g=16)
    data = p.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    try:
        info = probe(cut)
    except VideoError as exc:  # moov atom at the end: nothing readable; the message says so
        assert "cut.mp4" in str(exc)
        return
    assert 0 < info.frames <= 60


def test_real_videos_probe(shared_data):
    info = probe(real_video(shared_data, "centered_pair_small.mp4"))
    assert (info.frames, info.width, info.height) == (1100, 384, 384)
    assert info.fps == pytest.approx(15)
    path = real_video(shared_data, "m3v1mp4.mp4")  # H.264 4:4:4
    info = probe(path)
    assert info.frames == 2330 and info.pix_fmt == "yuv444p"
    # its keyframes decode wrongly after a bare seek unless the decoder has seen the first packet
    with av.open(str(path)) as c:
        seq = [f.to_ndarray(format="rgb24") for _, f in zip(range(400), c.decode(video=0))]
    frames = VideoReader(info).read(300, 303)
    assert frames.shape == (3, 480, 640, 3)
    for i in range(3):
        assert (frames[i] == seq[300 + i]).all()


def test_grey_is_the_luma_of_the_rgb_frame(tmp_path):
    """The luma plane (range-expanded) and the BT.601 formula on FFmpeg's RGB agree to its rounding."""
    from selfee.live_frames import rgb_to_gray_np
    from selfee.video import frame_to_grey

    rng = np.random.default_rng(0)
    frames = rng.integers(30, 220, (6, 48, 64, 3), dtype=np.uint8)
    frames[..., 1] = frames[..., 0]  # greyish, like behaviour videos
    frames[..., 2] = frames[..., 0]
    for pix in ("yuv420p", "yuv444p", "yuvj420p"):
        p = write_video(tmp_path / f"{pix}.mp4", frames, pix_fmt=pix, crf=0)
        with av.open(str(p)) as c:
            for f in c.decode(video=0):
                a = frame_to_grey(f).astype(int)
                b = rgb_to_gray_np(f.to_ndarray(format="rgb24")).astype(int)
                assert np.abs(a - b).max() <= 2 and np.abs(a - b).mean() < 1.0, pix
    # an RGB source goes through the formula itself
    f = av.VideoFrame.from_ndarray(frames[0], format="rgb24")
    assert (frame_to_grey(f) == rgb_to_gray_np(frames[0])).all()


def test_luma_is_the_plane_at_its_range_and_grey_expands_it():
    """``luma``: the decoder's Y plane as it is, flagged limited unless the format or the frame says
    full range; ``frame_to_grey`` maps limited 16..235 onto 0..255 (round((y - 16) * 255 / 219), clipped)."""
    from selfee.live_frames import rgb_to_gray_np
    from selfee.video import luma

    y = np.arange(96, dtype=np.uint8).reshape(8, 12) * 2 + 10
    for fmt, rng, limited in (("yuv420p", 0, True), ("yuv420p", 1, True), ("yuv420p", 2, False),
                              ("yuvj420p", 0, False), ("gray", 0, False)):
        f = av.VideoFrame(12, 8, fmt)
        f.color_range = rng
        f.planes[0].update(np.pad(y, ((0, 0), (0, f.planes[0].line_size - 12))).tobytes())
        plane, lim = luma(f)
        assert (plane == y).all() and lim == limited, fmt
        ref = np.clip(np.floor((y.astype(float) - 16) * 255 / 219 + 0.5), 0, 255) if limited else y
        assert (frame_to_grey(f) == ref).all(), fmt
    rgb = np.random.default_rng(1).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    plane, lim = luma(av.VideoFrame.from_ndarray(rgb, format="rgb24"))
    assert not lim and (plane == rgb_to_gray_np(rgb)).all()


def test_grey_on_real_videos(shared_data):
    from selfee.live_frames import rgb_to_gray_np
    from selfee.video import frame_to_grey

    for name in ("mouse_video.mp4", "20190128_113421.120s.mp4", "m3v1mp4.mp4"):
        with av.open(str(real_video(shared_data, name))) as c:
            f = next(c.decode(video=0))
            d = np.abs(frame_to_grey(f).astype(int) - rgb_to_gray_np(f.to_ndarray(format="rgb24")).astype(int))
            assert d.max() <= 3 and d.mean() < 2.0, name
