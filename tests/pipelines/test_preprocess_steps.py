"""Background subtraction and illumination steps (reference semantics), and the DALI lane applying them."""

import numpy as np
import pytest
import torch

from conftest import write_video
from selfee.config import PreprocessConfig
from selfee.video import probe
from selfee.video.preprocess import (
    Preprocessor,
    background_frames,
    equalize,
    load_or_compute_background,
    normalize_range,
    subtract_background,
)


def arena_video(path, n=40, fps=10):
    """A fixed textured floor with a bright square moving across it: the mean is nearly the floor."""
    rng = np.random.default_rng(0)
    floor = np.kron(rng.integers(60, 120, (6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    frames = np.repeat(floor[None], n, 0)
    for i in range(n):
        x = (i * 5) % 56
        frames[i, 20:28, x : x + 8] = 240
    return write_video(path, frames, fps=fps, crf=0), floor


def test_equalize_is_opencvs():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    for lo, hi in ((0, 256), (40, 90), (100, 101)):
        x = rng.integers(lo, hi, (2, 3, 17, 23)).astype(np.uint8)
        ref = np.stack([[cv2.equalizeHist(x[t, c]) for c in range(3)] for t in range(2)])
        assert (equalize(torch.from_numpy(x)).numpy() == ref).all()


def test_normalize_range_and_subtraction():
    x = torch.tensor([[[[10, 60], [35, 20]]], [[[7, 7], [7, 7]]]], dtype=torch.uint8).expand(2, 3, 2, 2)
    y = normalize_range(x)
    assert y[0, 0].tolist() == [[0, 255], [128, 51]] and torch.equal(y[1], x[1])  # flat frames unchanged
    bg = torch.full((3, 2, 2), 30.4)
    assert subtract_background(x, bg)[0, 0].tolist() == [[20, 30], [5, 10]]


def test_mean_background_is_cached_and_subtracted(tmp_path, monkeypatch):
    p, floor = arena_video(tmp_path / "arena.mp4")
    cfg = PreprocessConfig(background="mean", background_seconds=2.0, background_samples=10)
    pre = Preprocessor(cfg, probe(p), cache_dir=tmp_path / "cache")
    assert background_frames(pre).tolist() == [0, 2, 4, 6, 8, 11, 13, 15, 17, 19]  # 10 spread over the first 2 s
    bg = pre.background()
    assert bg.shape == (3, 48, 64) and bg.dtype == torch.float32
    still = np.ones((48, 64), bool)
    still[20:28] = False
    assert np.abs(bg.permute(1, 2, 0).numpy()[still] - floor[still]).mean() < 3  # the floor (up to codec error), away from the animal
    cached = list((tmp_path / "cache").glob("arena.*.background.npy"))
    assert len(cached) == 1
    monkeypatch.setattr("selfee.video.preprocess.compute_background", lambda pre: pytest.fail("recomputed"))
    again = load_or_compute_background(Preprocessor(cfg, probe(p)), tmp_path / "cache")
    assert torch.equal(again, bg)
    from selfee.video import VideoReader

    frame = torch.from_numpy(VideoReader(probe(p)).read(30, 31)).permute(0, 3, 1, 2)
    out = pre(frame)[0, 0].numpy()
    assert out[20:28, 0:64][:, (30 * 5) % 56 : (30 * 5) % 56 + 8].min() > 100  # the animal stays bright
    assert np.median(out[still]) < 4  # the floor goes black


@pytest.mark.dali
def test_dali_lane_applies_the_same_preprocessing(tmp_path, monkeypatch):
    pytest.importorskip("nvidia.dali")
    from dali_helpers import as_uint8, cfg_for, take

    from selfee.data import ReferenceLoader, make_sources
    from selfee.pipelines.train import DaliTrainPipeline

    p, _ = arena_video(tmp_path / "arena.mp4", n=60)
    cfg = cfg_for(**{"data.preprocess.background": "mean", "data.preprocess.illumination": "equalize",
                     "data.preprocess.roi": [4, 4, 50, 36], "data.preprocess.roi_margin": 0.05,
                     "data.preprocess.invert": True, "data.holdout_fraction": 0})
    monkeypatch.setenv("SELFEE_CACHE", str(tmp_path / "cache"))
    sources = make_sources([probe(p)], cfg)
    ref = take(ReferenceLoader(sources, cfg), 4)
    pipe = DaliTrainPipeline(make_sources([probe(p)], cfg), cfg, "cpu")
    ours = take(pipe, 4)
    for a, r in zip(ours, ref):
        assert torch.equal(as_uint8(a.view1), r.frames)


# ---------------------------------------------------------------------------------------------
# Geometric steps: ROI (+ margin) and resize, alone and per video through the config
# ---------------------------------------------------------------------------------------------


def test_roi_box_grows_by_the_margin_and_clips_to_the_frame():
    from selfee.video.preprocess import roi_box

    assert roi_box(PreprocessConfig(), 48, 64) == (0, 0, 64, 48)
    assert roi_box(PreprocessConfig(roi=(10, 20, 30, 40)), 100, 100) == (10, 20, 40, 60)
    # margin: floor(30 * 0.1) = 3 px left/right, floor(40 * 0.1) = 4 px top/bottom
    assert roi_box(PreprocessConfig(roi=(10, 20, 30, 40), roi_margin=0.1), 100, 100) == (7, 16, 43, 64)
    # floor(50 * 0.25) = 12, floor(30 * 0.25) = 7: clipped at the left, top and right edges of 64 x 48
    assert roi_box(PreprocessConfig(roi=(2, 3, 50, 30), roi_margin=0.25), 48, 64) == (0, 0, 64, 40)
    assert roi_box(PreprocessConfig(roi=(60, 0, 30, 10)), 48, 64) == (60, 0, 64, 10)  # wider than the frame: cut
    with pytest.raises(ValueError, match="outside"):
        roi_box(PreprocessConfig(roi=(70, 0, 10, 10)), 48, 64)


def test_roi_and_resize_outputs(tmp_path):
    import torch.nn.functional as F

    info = probe(write_video(tmp_path / "v.mp4", np.zeros((5, 48, 64, 3), np.uint8)))
    x = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 3, 48, 64), dtype=np.uint8))
    crop = Preprocessor(PreprocessConfig(roi=(10, 5, 30, 20), roi_margin=0.1), info)
    assert crop.roi == (7, 3, 43, 27) and crop.out_hw == (24, 36)
    assert torch.equal(crop(x), x[..., 3:27, 7:43])
    sized = Preprocessor(PreprocessConfig(roi=(10, 5, 30, 20), roi_margin=0.1, resize=(12, 20)), info)
    out = sized(x)
    assert out.shape == (2, 3, 12, 20) and out.dtype == torch.uint8 and sized.out_hw == (12, 20)
    want = F.interpolate(x[..., 3:27, 7:43].double(), size=(12, 20), mode="bilinear", antialias=True,
                         align_corners=False).round()
    assert (out.double() - want).abs().max() <= 1  # torch's fixed-point uint8 kernel vs float64
    grey = Preprocessor(PreprocessConfig(resize=(12, 20), invert=True), info, grey=True)
    g = x[:, :1]
    assert grey(g).shape == (2, 1, 12, 20)
    assert torch.equal(grey(g), 255 - Preprocessor(PreprocessConfig(resize=(12, 20)), info, grey=True)(g))


def by_hand(path, roi=None, resize=None, invert=False, size=(32, 48)) -> torch.Tensor:
    """T x h x w: the reference grey of every frame, then crop, resize, invert and the working size, by hand."""
    from dali_helpers import reference_grey

    info = probe(path)
    g = reference_grey(path, (info.height, info.width)).unsqueeze(1)  # the video's size: no resize yet
    if roi is not None:
        x0, y0, x1, y1 = roi
        g = g[..., y0:y1, x0:x1]
    if resize is not None:
        g = torch.nn.functional.interpolate(g, size=resize, mode="bilinear", antialias=True, align_corners=False)
    if invert:
        g = 255 - g
    return torch.nn.functional.interpolate(g, size=size, mode="bilinear", antialias=True, align_corners=False)[:, 0]


@pytest.mark.dali
def test_two_videos_with_their_own_preprocessing_from_the_config_file(tmp_path):
    pytest.importorskip("nvidia.dali")
    import yaml
    from dali_helpers import as_uint8, take, textured_frames

    from selfee.config import SelfeeConfig
    from selfee.data import ReferenceLoader, make_sources
    from selfee.live_frames import neighbor_indices
    from selfee.pipelines.train import DaliTrainPipeline

    a = write_video(tmp_path / "a.mp4", textured_frames(50, 48, 64, seed=4), crf=0)
    b = write_video(tmp_path / "b.mp4", textured_frames(40, 60, 80, seed=5), crf=0)
    conf = {
        "data": {"input_size": [32, 48], "frame_interval": 2, "pool_batches": 4, "chunk_frames": 16,
                 "holdout_fraction": 0, "decode_threads": 1, "inner_shuffle": False,
                 "preprocess": {"roi_margin": 0.1},  # the default, which per-video entries start from
                 "videos": {"a.mp4": {"roi": [10, 8, 40, 30], "invert": True},  # by file name
                            "b": {"resize": [30, 50]}}},  # by stem
        "optim": {"batch_size": 8}, "loss": {"clusters": 4}, "augment": {"enabled": False},
        "train": {"pipeline": "dali"},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(conf))
    cfg = SelfeeConfig.load(tmp_path / "run.yaml")
    sources = make_sources([probe(a), probe(b)], cfg)
    assert sources[0].pre.roi == (6, 5, 54, 41) and sources[0].pre.cfg.invert and sources[0].pre.cfg.resize is None
    assert sources[1].pre.roi == (0, 0, 80, 60) and sources[1].pre.cfg.resize == (30, 50)
    expected = [by_hand(a, roi=(6, 5, 54, 41), invert=True), by_hand(b, resize=(30, 50))]
    ref = take(ReferenceLoader(sources, cfg), 8)
    pipe = DaliTrainPipeline(sources, cfg, "cpu")
    ours = take(pipe, 8)
    assert set(torch.cat([x.video for x in ours]).tolist()) == {0, 1}  # both videos drawn
    for o, r in zip(ours, ref):
        assert torch.equal(o.frame, r.frame) and torch.equal(o.video, r.video)
        for i, (v, f) in enumerate(zip(o.video.tolist(), o.frame.tolist())):
            want = expected[v][neighbor_indices(torch.tensor([f]), 2, sources[v].frames)[0]]
            assert torch.equal(r.frames[i], want)
            assert torch.equal(as_uint8(o.view1[i]), want)  # H.264 on the CPU: PyAV lane, exact


@pytest.mark.dali
def test_dali_cpu_decoder_lane_with_roi_resize_and_invert(tmp_path, caplog):
    pytest.importorskip("nvidia.dali")
    import logging

    from dali_helpers import as_uint8, cfg_for, grey_frames, max_abs_diff, take

    from conftest import write_video as encode
    from selfee.data import ReferenceLoader, make_sources
    from selfee.live_frames import neighbor_indices
    from selfee.pipelines.train import DaliTrainPipeline

    try:
        p = encode(tmp_path / "v.webm", grey_frames(60, 64, 96, seed=6), codec="libvpx-vp9")
    except Exception as exc:
        pytest.skip(f"no VP9 encoder: {exc}")
    cfg = cfg_for(**{"data.preprocess.roi": [12, 6, 60, 44], "data.preprocess.roi_margin": 0.1,
                     "data.preprocess.resize": [40, 56], "data.preprocess.invert": True,
                     "data.holdout_fraction": 0})
    sources = make_sources([probe(p)], cfg)
    assert sources[0].pre.roi == (6, 2, 78, 54)
    want = by_hand(p, roi=(6, 2, 78, 54), resize=(40, 56), invert=True)
    ref = take(ReferenceLoader(sources, cfg), 4)
    with caplog.at_level(logging.INFO, logger="selfee"):
        pipe = DaliTrainPipeline(sources, cfg, "cpu")
        ours = take(pipe, 4)
    assert pipe.lanes == {"v.webm": "dali-cpu"}
    for o, r in zip(ours, ref):
        expected = want[neighbor_indices(o.frame, 2, sources[0].frames)]
        assert torch.equal(o.frame, r.frame) and torch.equal(r.frames, expected)
        # crop, resize and invert keep DALI's YUV -> RGB -> grey rounding within 1 level
        assert max_abs_diff(as_uint8(o.view1), expected) <= 1
