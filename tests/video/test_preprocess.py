"""Preprocessing steps (reference semantics): equalization, range, background subtraction and its cache, ROI, resize."""

import numpy as np
import pytest
import torch

from conftest import arena_video, write_video
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
