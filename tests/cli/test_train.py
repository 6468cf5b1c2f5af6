"""``train`` and ``config`` through the CLI: bad videos skipped with one line each, clean failures, the resolved config."""

import json
from pathlib import Path

import torch

from conftest import numbered_frames, write_video

from .conftest import run


def test_config_command_prints_resolved_yaml():
    r = run("config", "--preset", "fly", "-s", "optim.batch_size=512")
    assert r.exit_code == 0
    assert "input_size:\n  - 224\n  - 224" in r.output and "batch_size: 512" in r.output
    assert "optim.lr = 0.1" in r.output


def test_train_missing_video_fails_cleanly(tmp_path, tiny_config):
    r = run("train", tmp_path / "nope.mp4", "--out", tmp_path / "run", "--config", tiny_config())
    assert r.exit_code == 2
    assert "nope.mp4: file not found" in r.output and "Traceback" not in r.output


def test_train_skips_bad_videos_and_trains_on_the_rest(tmp_path, tiny_config):
    good = write_video(tmp_path / "good.mp4", numbered_frames(40))
    short = write_video(tmp_path / "short.mp4", numbered_frames(2))  # the tiny config's k = 1 needs 2k+1 = 3 frames
    junk = tmp_path / "junk.mp4"
    junk.write_text("no video here")
    missing = tmp_path / "missing.mp4"
    r = run("train", good, short, junk, missing, "--out", tmp_path / "run", "--steps", 2, "--config", tiny_config())
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "Traceback" not in r.output
    # one line per bad file, naming it and its problem
    for name, problem in (("short.mp4", "has 2 frames"), ("junk.mp4", "not a video"), ("missing.mp4", "file not found")):
        named = [line for line in lines if name in line]
        assert len(named) == 1, (name, r.output)
        assert named[0].startswith("error: ") and problem in named[0], named[0]
    assert not any("good.mp4" in line for line in lines)
    # the good one trained, alone
    assert "training on 1 videos" in r.output and "3 skipped" in r.output and "done: step 2" in r.output
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [Path(v).name for v in run_info["videos"]] == ["good.mp4"]
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["step"] == 2


def test_train_without_videos_is_one_clean_line(tmp_path, tiny_config):
    r = run("train", "--out", tmp_path / "run", "--config", tiny_config())
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == ["error: train: no VIDEOS given (pass video files, folders or glob patterns)"]
    assert not (tmp_path / "run").exists()


def test_train_rejects_an_unwritable_output(tmp_path, tiny_config):
    good = write_video(tmp_path / "good.mp4", numbered_frames(20))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run("train", good, "--out", blocker / "run", "--steps", 1, "--config", tiny_config())
    assert r.exit_code == 2 and "not writable" in r.output
