"""Training sources: unusable windows and ROIs are reported per video, undecodable files are caught at the probe."""

import logging
import shutil

import pytest

from conftest import make_tiny_cfg
from selfee.config import SelfeeConfig
from selfee.data import make_sources
from selfee.errors import SelfeeError, VideoError
from selfee.video import open_inputs, probe, probe_many


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
    cfg = make_tiny_cfg("optim.steps=2", 'data.videos={"late.mp4": {"start_s": 60}}')
    summary = run_training(cfg, [damaged.good, late], tmp_path / "run", show_progress=False)
    assert summary["step"] == 2
    with pytest.raises(SelfeeError, match="none of the 1 videos can be used"):
        run_training(cfg, [late], tmp_path / "run2", show_progress=False)

