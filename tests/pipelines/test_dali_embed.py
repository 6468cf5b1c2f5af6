"""DALI embedding source (CPU lane): every frame PyAV decodes, in order, across codecs and bad inputs."""

import logging

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from dali_helpers import cfg_for, decode_rgb, grey_frames, max_abs_diff, reference_grey, textured_frames  # noqa: E402

from conftest import numbered_frames, write_video  # noqa: E402
from selfee.data import make_sources  # noqa: E402
from selfee.embed import embed_batches, iter_embed_batches  # noqa: E402
from selfee.live_frames import neighbor_indices  # noqa: E402
from selfee.pipelines.embed import dali_embed_batches  # noqa: E402
from selfee.video import probe, probe_many  # noqa: E402


def encode(path, frames, codec, pix="yuv420p", **opts):
    try:
        return write_video(path, frames, codec=codec, pix_fmt=pix, **opts)
    except Exception as exc:  # encoder missing from this FFmpeg build
        pytest.skip(f"{codec} encoder unavailable: {exc}")


def embed_all(path, cfg, batch=16, **kw):
    (src,) = make_sources([probe(path)], cfg)
    batches = list(dali_embed_batches(src, cfg, batch, "cpu", sequence=8, **kw))
    return src, batches


@pytest.mark.parametrize("codec, suffix, pix, opts, exact", [
    ("libx264", ".mp4", "yuv420p", {"g": 8, "bf": 2}, True),  # PyAV lane, with B-frames
    ("mpeg4", ".avi", "yuv420p", {}, True),  # MPEG-4 Part 2: PyAV lane
    ("libvpx-vp9", ".webm", "yuv420p", {}, False),  # DALI's CPU decoder, grey content
])
def test_every_frame_once_in_order(tmp_path, codec, suffix, pix, opts, exact):
    n = 37
    p = encode(tmp_path / f"v{suffix}", textured_frames(n) if exact else grey_frames(n), codec, pix, **opts)
    cfg = cfg_for()
    src, batches = embed_all(p, cfg)
    frames = torch.cat([b.frame for b in batches])
    assert frames.tolist() == list(range(len(decode_rgb(p)))) == list(range(n))  # PyAV's count, in order
    assert all(len(b.frame) == 16 for b in batches[:-1]) and batches[-1].frame.dtype == torch.int64
    live = torch.cat([b.frames for b in batches])
    ref = reference_grey(p, (32, 48))[neighbor_indices(torch.arange(n), 2, n)]
    if exact:
        assert torch.equal(live, ref)
    else:  # DALI gives RGB (BT.601 from YUV); its luma is the Y plane's within rounding when nothing clips
        assert max_abs_diff(live, ref) <= 1
    times = torch.cat([b.time_s for b in batches])
    assert times.dtype == torch.float64 and times[1].item() == pytest.approx(1 / 25)


def test_time_window_and_rgb_mode_on_dalis_decoder(tmp_path):
    p = encode(tmp_path / "v.webm", textured_frames(40), "libvpx-vp9", fps=10)
    cfg = cfg_for(**{"data.live_frames": False, "data.preprocess.start_s": 1.0, "data.preprocess.duration_s": 2.0})
    _, batches = embed_all(p, cfg, batch=8)
    assert torch.cat([b.frame for b in batches]).tolist() == list(range(10, 30))
    assert torch.cat([b.frames for b in batches]).shape == (20, 3, 32, 48)


def test_a_failing_dali_stream_is_finished_by_pyav(tmp_path, monkeypatch, caplog):
    p = encode(tmp_path / "v.webm", textured_frames(30), "libvpx-vp9")
    from selfee.pipelines import decode

    real = decode._dali_stream

    def breaks(*a, **kw):
        for i, item in enumerate(real(*a, **kw)):
            if i == 2:
                raise RuntimeError("Critical error in pipeline:\nCUVID rejected the stream (test)")
            yield item

    monkeypatch.setattr(decode, "_dali_stream", breaks)
    record = {}
    with caplog.at_level(logging.WARNING, logger="selfee"):
        _, batches = embed_all(p, cfg_for(), batch=7, record=record)
    assert torch.cat([b.frame for b in batches]).tolist() == list(range(30))
    assert ("v.webm: DALI's CPU decoder unavailable (stopped at frame 16: CUVID rejected the stream "
            "(test)); using PyAV from frame 16") in caplog.text
    assert record["lane"] == "dali-cpu+pyav" and record["frames"] == {"dali-cpu": 16, "pyav": 14}
    assert record["fallback"]["taken"] == "PyAV from frame 16"


def test_broken_last_gop_gives_what_pyav_decodes(tmp_path):
    p = encode(tmp_path / "v.webm", textured_frames(48), "libvpx-vp9", g=8)
    data = p.read_bytes()
    cut = tmp_path / "cut.webm"
    cut.write_bytes(data[: len(data) - len(data) // 6])
    try:
        infos, _ = probe_many([cut], min_frames=5)
        assert infos
    except AssertionError:
        pytest.skip("the cut file is unreadable as a whole on this FFmpeg")
    cfg = cfg_for()
    (src,) = make_sources(infos, cfg)
    ours = list(dali_embed_batches(src, cfg, 16, "cpu", sequence=8))
    ref = list(iter_embed_batches(src, cfg, 16))
    assert torch.cat([b.frame for b in ours]).tolist() == torch.cat([b.frame for b in ref]).tolist()


def test_variable_frame_rate_goes_through_pyav(tmp_path, caplog):
    from fractions import Fraction

    from selfee.video import VideoWriter

    p = tmp_path / "vfr.mp4"
    t = 0
    with VideoWriter(p, 25, time_base=Fraction(1, 1000)) as out:
        for i, f in enumerate(numbered_frames(20)):
            out.write(f, pts=t)
            t += 40 if i % 2 else 90  # alternating intervals
    assert probe(p).vfr
    with caplog.at_level(logging.INFO, logger="selfee"):
        _, batches = embed_all(p, cfg_for())
    assert "vfr.mp4: decoding with pyav (variable frame rate" in caplog.text
    assert torch.cat([b.frame for b in batches]).tolist() == list(range(20))


def test_dispatch_and_bad_videos_in_a_multi_video_run(tmp_path, monkeypatch):
    from selfee.checkpoint import checkpoint_dict
    from selfee.embed import embed_videos
    from selfee.export.open import open_embedder
    from selfee.fileio import atomic_save
    from selfee.model import Selfee

    monkeypatch.setenv("SELFEE_CACHE", str(tmp_path / "cache"))  # the checkpoint's cached export on the CPU
    cfg = cfg_for(**{"model.arch": "resnet18", "model.proj_dim": 8, "model.pred_hidden": 4, "model.cld_dim": 4,
                     "model.init": "none", "embed.pipeline": "auto"})
    weights = tmp_path / "w.pt"
    atomic_save(checkpoint_dict(Selfee(cfg.model), cfg), weights)
    good = encode(tmp_path / "good.webm", textured_frames(21), "libvpx-vp9")
    short = write_video(tmp_path / "short.mp4", numbered_frames(3))
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    (src,) = make_sources([probe(good)], cfg)
    assert torch.cat([b.frame for b in embed_batches(src, cfg, 8)]).tolist() == list(range(21))
    out = tmp_path / "emb"
    manifest = embed_videos([good, short, junk], weights, out, cfg=cfg, batch_size=8, device="cpu",
                            show_progress=False, open_embedder=open_embedder)
    assert np.load(out / "good.npy").shape == (21, 8)
    failed = {f["video"].split("/")[-1]: f["error"] for f in manifest["failed"]}
    assert set(failed) == {"short.mp4", "junk.mp4"} and "3 frames" in failed["short.mp4"]
