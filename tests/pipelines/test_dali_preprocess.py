"""The DALI lanes apply each video's preprocessing (background, illumination, ROI, resize, invert) as the reference does."""

import pytest
import torch

from conftest import arena_video, write_video
from selfee.video import probe

pytest.importorskip("nvidia.dali")


def test_dali_lane_applies_the_same_preprocessing(tmp_path, monkeypatch):
    from dali_helpers import as_uint8, cfg_for, take

    from selfee.data import BlockLoader, make_sources
    from selfee.pipelines.train import DaliTrainPipeline

    p, _ = arena_video(tmp_path / "arena.mp4", n=60)
    cfg = cfg_for(**{"data.preprocess.background": "mean", "data.preprocess.illumination": "equalize",
                     "data.preprocess.roi": [4, 4, 50, 36], "data.preprocess.roi_margin": 0.05,
                     "data.preprocess.invert": True, "data.holdout_fraction": 0})
    monkeypatch.setenv("SELFEE_CACHE", str(tmp_path / "cache"))
    sources = make_sources([probe(p)], cfg)
    ref = take(BlockLoader(sources, cfg), 4)
    pipe = DaliTrainPipeline(make_sources([probe(p)], cfg), cfg, "cpu")
    ours = take(pipe, 4)
    for a, r in zip(ours, ref):
        assert torch.equal(as_uint8(a.view1), r.frames)


# ---------------------------------------------------------------------------------------------
# Geometric steps: ROI (+ margin) and resize, alone and per video through the config
# ---------------------------------------------------------------------------------------------


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


def test_two_videos_with_their_own_preprocessing_from_the_config_file(tmp_path):
    import yaml
    from dali_helpers import as_uint8, take, textured_frames

    from selfee.config import SelfeeConfig
    from selfee.data import BlockLoader, make_sources
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
    ref = take(BlockLoader(sources, cfg), 8)
    pipe = DaliTrainPipeline(sources, cfg, "cpu")
    ours = take(pipe, 8)
    assert set(torch.cat([x.video for x in ours]).tolist()) == {0, 1}  # both videos drawn
    for o, r in zip(ours, ref):
        assert torch.equal(o.frame, r.frame) and torch.equal(o.video, r.video)
        for i, (v, f) in enumerate(zip(o.video.tolist(), o.frame.tolist())):
            want = expected[v][neighbor_indices(torch.tensor([f]), 2, sources[v].frames)[0]]
            assert torch.equal(r.frames[i], want)
            assert torch.equal(as_uint8(o.view1[i]), want)  # H.264 on the CPU: PyAV lane, exact


def test_dali_cpu_decoder_lane_with_roi_resize_and_invert(tmp_path, caplog):
    import logging

    from dali_helpers import as_uint8, cfg_for, grey_frames, max_abs_diff, take

    from conftest import write_video as encode
    from selfee.data import BlockLoader, make_sources
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
    ref = take(BlockLoader(sources, cfg), 4)
    with caplog.at_level(logging.INFO, logger="selfee"):
        pipe = DaliTrainPipeline(sources, cfg, "cpu")
        ours = take(pipe, 4)
    assert pipe.lanes == {"v.webm": "dali-cpu"}
    for o, r in zip(ours, ref):
        expected = want[neighbor_indices(o.frame, 2, sources[0].frames)]
        assert torch.equal(o.frame, r.frame) and torch.equal(r.frames, expected)
        # crop, resize and invert keep DALI's YUV -> RGB -> grey rounding within 1 level
        assert max_abs_diff(as_uint8(o.view1), expected) <= 1
