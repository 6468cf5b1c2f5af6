"""Background subtraction and illumination steps (reference semantics), and the DALI lane applying them."""

import numpy as np
import pytest
import torch

from conftest import write_video
from selfee.config import PreprocessConfig
from selfee.preprocess import (
    Preprocessor,
    background_frames,
    equalize,
    load_or_compute_background,
    normalize_range,
    subtract_background,
)
from selfee.video import probe


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
    monkeypatch.setattr("selfee.preprocess.compute_background", lambda pre: pytest.fail("recomputed"))
    again = load_or_compute_background(Preprocessor(cfg, probe(p)), tmp_path / "cache")
    assert torch.equal(again, bg)
    from selfee.video import VideoReader

    frame = torch.from_numpy(VideoReader(probe(p)).read(30, 31)).permute(0, 3, 1, 2)
    out = pre(frame)[0, 0].numpy()
    assert out[20:28, 0:64][:, (30 * 5) % 56 : (30 * 5) % 56 + 8].min() > 100  # the animal stays bright
    assert np.median(out[still]) < 4  # the floor goes black


@pytest.mark.dali
def test_dali_lane_applies_the_same_preprocessing(tmp_path):
    pytest.importorskip("nvidia.dali")
    from dali_helpers import as_uint8, cfg_for

    from selfee.data import ReferenceLoader, make_sources
    from selfee.pipelines.train import DaliTrainPipeline

    p, _ = arena_video(tmp_path / "arena.mp4", n=60)
    cfg = cfg_for(**{"data.preprocess.background": "mean", "data.preprocess.illumination": "equalize",
                     "data.preprocess.roi": [4, 4, 50, 36], "data.preprocess.roi_margin": 0.05,
                     "data.preprocess.invert": True, "data.holdout_fraction": 0})
    import os

    os.environ["SELFEE_CACHE_DIR"] = str(tmp_path / "cache")
    try:
        sources = make_sources([probe(p)], cfg)
        ref_loader = ReferenceLoader(sources, cfg)
        ref = [b for _, b in zip(range(4), ref_loader)]
        ref_loader.close()
        pipe = DaliTrainPipeline(make_sources([probe(p)], cfg), cfg, "cpu")
        ours = [b for _, b in zip(range(4), pipe)]
        pipe.close()
    finally:
        del os.environ["SELFEE_CACHE_DIR"]
    for a, r in zip(ours, ref):
        assert torch.equal(as_uint8(a.view1), r.frames)
