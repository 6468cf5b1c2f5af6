"""What DALI is fed: keyframe-aligned segments remuxed in memory, exact in frames and bounded in bytes."""

import io

import av
import numpy as np
import pytest
import torch

from conftest import write_video
from selfee.video import probe

pytest.importorskip("nvidia.dali")

from dali_helpers import cfg_for, dali_cpu_rgb, decode_rgb, textured_frames  # noqa: E402

from selfee.data import make_sources, plan_chunks  # noqa: E402
from selfee.pipelines import decode  # noqa: E402
from selfee.pipelines.segments import SegmentCutter, plan_segments  # noqa: E402

FAST_VP9 = {"deadline": "realtime", "cpu-used": 8}


def encode(path, frames, codec, **opts):
    try:
        return write_video(path, frames, codec=codec, pix_fmt="yuvj420p" if codec == "mjpeg" else "yuv420p", **opts)
    except Exception as exc:  # encoder missing from this FFmpeg build
        pytest.skip(f"{codec} encoder unavailable: {exc}")


def decode_bytes(data: np.ndarray) -> np.ndarray:
    with av.open(io.BytesIO(data.tobytes())) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def dali_whole(path, device="cpu") -> np.ndarray:
    """Every frame of ``path`` through DALI's decoder (``mixed``: NVDEC), fed the whole file (the old way)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=0 if device == "mixed" else None, exec_async=False,
                  exec_pipelined=False, prefetch_queue_depth=1)
    def whole():
        return fn.decoders.video(fn.external_source(name="encoded", dtype=types.UINT8), device=device)

    pipe = whole()
    pipe.build()
    pipe.feed_input("encoded", [np.fromfile(str(path), np.uint8)])
    (out,) = pipe.run()
    return np.array(out.as_cpu()[0])


@pytest.fixture
def fed(monkeypatch):
    """Byte sizes of every encoded sample fed to a DALI pipeline, by input name."""
    from nvidia.dali.pipeline import Pipeline

    sizes: dict[str, list[int]] = {}
    real = Pipeline.feed_input

    def spy(self, name, data, *a, **kw):
        if name in ("encoded", "video"):
            sizes.setdefault(name, []).extend(int(np.asarray(x).nbytes) for x in data)
        return real(self, name, data, *a, **kw)

    monkeypatch.setattr(Pipeline, "feed_input", spy)
    return sizes


@pytest.fixture(scope="module")
def long_vp9(tmp_path_factory):
    p = tmp_path_factory.mktemp("long") / "long.webm"
    return encode(p, textured_frames(1200), "libvpx-vp9", g=30, **FAST_VP9)


# ---------------------------------------------------------------------------------------------
# Remuxing: a segment decodes to exactly the source's frames from its keyframe
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec, suffix, opts", [
    ("libx264", ".mp4", {"g": 12, "bf": 2}),  # B-frames: decode order != presentation order
    ("libx264", ".mp4", {"bf": 3, "x264-params": "open-gop=1:keyint=12:min-keyint=12"}),  # leading pictures
    ("libx264", ".ts", {"g": 12, "bf": 2}),  # MPEG-TS seeks by bytes
    ("libx265", ".mkv", {"x265-params": "keyint=12:min-keyint=12:bframes=3:open-gop=1:log-level=error"}),
    ("mpeg4", ".avi", {"g": 12, "bf": 2}),
    ("mjpeg", ".avi", {}),
    ("libvpx", ".webm", {"g": 12}),
    ("libvpx-vp9", ".webm", {"g": 12, **FAST_VP9}),
])
def test_a_segment_decodes_to_the_frames_of_the_source(tmp_path, codec, suffix, opts):
    p = encode(tmp_path / f"v{suffix}", textured_frames(60), codec, **opts)
    info = probe(p)
    full = decode_rgb(p)
    assert len(full) == info.frames == 60
    cutter = SegmentCutter(info)
    for start, stop in [(0, 5), (3, 20), (13, 14), (25, 47), (49, 60), (59, 60)]:
        seg = cutter.cut(start, stop)
        assert seg.first == info.keyframe_before(start) and seg.frames >= stop - seg.first
        # Matroska, but MPEG-4 from AVI stays AVI (DALI unpacks DivX packed B-frames for NVDEC only there)
        assert seg.data[:4].tobytes() == (b"RIFF" if codec == "mpeg4" else b"\x1a\x45\xdf\xa3")
        got = decode_bytes(seg.data)
        assert len(got) >= stop - seg.first
        assert np.array_equal(got[: stop - seg.first], full[seg.first : stop])  # the same pictures, in order
    cutter.close()


@pytest.mark.parametrize("name", ["centered_pair_small.mp4", "mouse_video.mp4", "bsoid/body_groom_hstacked.mp4"])
def test_segments_of_real_videos(shared_data, name):
    from conftest import real_video
    from selfee.video import VideoReader

    info = probe(real_video(shared_data, name))
    cutter = SegmentCutter(info)
    with VideoReader(info) as reader:
        for start in (info.frames // 3, info.frames // 2 + 7, info.frames - 20):
            stop = min(info.frames, start + 24)
            seg = cutter.cut(start, stop)
            assert seg.nbytes * 4 < info.path.stat().st_size
            got = decode_bytes(seg.data)[start - seg.first : stop - seg.first]
            assert np.array_equal(got, reader.read(start, stop))
    cutter.close()


def test_segment_plans_follow_keyframes():
    from dataclasses import replace

    info = replace(probe_stub(), keyframes=np.array([0, 30, 60, 90, 100, 130]))
    assert plan_segments(info, 0, 150, 50) == [(0, 60), (60, 130), (130, 150)]
    assert plan_segments(info, 45, 95, 1) == [(30, 60), (60, 90), (90, 95)]
    assert plan_segments(info, 10, 10, 1) == []


def probe_stub():
    from fractions import Fraction
    from pathlib import Path

    from selfee.video import VideoInfo

    return VideoInfo(Path("x.webm"), 150, 25.0, 64, 48, "vp9", None, "yuv420p", Fraction(1, 1000),
                     np.arange(150) * 40, np.array([0]))


def test_dalis_decoder_gives_the_same_frames_from_a_segment_as_from_the_file(tmp_path):
    p = encode(tmp_path / "v.webm", textured_frames(60), "libvpx-vp9", g=12, **FAST_VP9)
    info = probe(p)
    whole = dali_whole(p)
    cutter = SegmentCutter(info)
    for start, stop in [(0, 7), (14, 40), (59, 60)]:
        seg = cutter.cut(start, stop)
        got = dali_cpu_rgb(seg.data)
        assert np.array_equal(got[start - seg.first : stop - seg.first], whole[start:stop])




# ---------------------------------------------------------------------------------------------
# Memory: each chunk (training) and each segment (embedding) carries its own bytes only
# ---------------------------------------------------------------------------------------------


def test_training_chunk_samples_are_bounded_by_the_chunk_not_the_file(long_vp9, fed):
    from selfee.pipelines.decode import DaliChunkDecoder

    cfg = cfg_for(**{"data.holdout_fraction": 0, "data.live_frames": False, "data.input_size": [48, 64]})
    (src,) = make_sources([probe(long_vp9)], cfg)
    chunks = plan_chunks(0, src, 2, 60, 0, src.frames)
    assert len(chunks) >= 19 and max(c.decode_stop - c.decode_start for c in chunks) <= 64
    picked = chunks[::3]
    dec = DaliChunkDecoder([src], False, (48, 64), torch.device("cpu"), threads=1)
    out = dec.decode_many(picked)
    dec.close()
    assert dec.lanes == {0: "dali-cpu"}
    file_bytes = long_vp9.stat().st_size
    assert len(fed["encoded"]) == len(picked)
    assert max(fed["encoded"]) * 10 < file_bytes  # ~1/20 of the file per chunk of 60 frames, not all of it
    whole = torch.from_numpy(dali_whole(long_vp9)).permute(0, 3, 1, 2)
    for c, x in zip(picked, out):
        assert torch.equal(x, whole[c.decode_start : c.decode_stop])  # the frames DALI gives for the whole file


def test_embedding_feeds_segments_not_the_file(long_vp9, fed, monkeypatch):
    from selfee.pipelines.embed import dali_embed_batches

    cuts = []
    real_cut = SegmentCutter.cut

    def cut(self, start, stop):
        seg = real_cut(self, start, stop)
        cuts.append(seg)
        return seg

    monkeypatch.setattr(SegmentCutter, "cut", cut)
    cfg = cfg_for(**{"data.live_frames": False, "data.input_size": [48, 64], "data.preprocess.start_s": 10.0,
                     "data.preprocess.duration_s": 30.0})
    info = probe(long_vp9)
    (src,) = make_sources([info], cfg)
    assert (src.pre.start, src.pre.stop) == (250, 1000)
    batches = list(dali_embed_batches(src, cfg, 64, "cpu", sequence=16))
    frames = torch.cat([b.frame for b in batches])
    assert frames.tolist() == list(range(250, 1000))  # the window, every frame once, in order
    whole = torch.from_numpy(dali_whole(long_vp9)).permute(0, 3, 1, 2)
    assert torch.equal(torch.cat([b.frames for b in batches]), whole[250:1000])
    # segments from the keyframe before the window, of whole GOPs (>= 128 frames), each fed alone
    assert cuts[0].first == info.keyframe_before(250) == 240
    assert all(a.first + a.frames == b.first for a, b in zip(cuts, cuts[1:]))  # consecutive, no overlap
    assert max(s.frames for s in cuts) <= decode.SEGMENT_FRAMES + 30
    assert fed["video"] == [s.nbytes for s in cuts]
    assert max(fed["video"]) * 5 < long_vp9.stat().st_size


@pytest.mark.gpu
@pytest.mark.parametrize("opts", [{"g": 12, "bf": 2}, {"bf": 3, "x264-params": "open-gop=1:keyint=12:min-keyint=12"}])
def test_nvdec_gives_the_same_frames_from_segments_as_from_the_file(tmp_path, opts):
    """NVDEC (DALI's mixed decoder, Annex B through ``h264_mp4toannexb`` for Matroska) on H.264 segments."""
    from selfee.pipelines.decode import DaliChunkDecoder

    p = write_video(tmp_path / "g.mp4", textured_frames(90, 64, 96), **opts)
    cfg = cfg_for(**{"data.holdout_fraction": 0, "data.live_frames": False, "data.input_size": [64, 96]})
    (src,) = make_sources([probe(p)], cfg)
    chunks = plan_chunks(0, src, 2, 16, 0, src.frames)
    dec = DaliChunkDecoder([src], False, (64, 96), torch.device("cuda"), threads=1)
    out = dec.decode_many(chunks)
    dec.close()
    assert dec.lanes == {0: "nvdec"}
    whole = torch.from_numpy(dali_whole(p, "mixed")).permute(0, 3, 1, 2)
    for c, x in zip(chunks, out):
        assert x.is_cuda and torch.equal(x.cpu(), whole[c.decode_start : c.decode_stop])
