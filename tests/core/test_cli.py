"""The command line: help, one-line errors with exit codes, config printing, convert, train/embed runs."""

import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from conftest import numbered_frames, write_video
from selfee.cli import app

runner = CliRunner()
TINY = ["--preset", "tiny", "-s", "data.input_size=[32,32]", "-s", "optim.batch_size=8", "-s", "train.eval_every=0",
        "-s", "model.proj_dim=32", "-s", "model.pred_hidden=8", "-s", "model.cld_dim=16", "-s", "loss.clusters=3",
        "-s", "train.tensorboard=false", "--device", "cpu", "--pipeline", "torch"]


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def test_help_lists_the_commands():
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("train", "embed", "convert", "demo", "config"):
        assert cmd in r.output


def test_config_command_prints_resolved_yaml():
    r = run("config", "--preset", "fly", "-s", "optim.batch_size=512")
    assert r.exit_code == 0
    assert "input_size:\n  - 224\n  - 224" in r.output and "batch_size: 512" in r.output
    assert "optim.lr = 0.1" in r.output


def test_bad_config_is_one_line(tmp_path):
    r = run("config", "-s", "optim.batch_size=0")
    assert r.exit_code == 2
    assert r.output.strip().startswith("error: config field 'optim.batch_size'") and len(r.output.strip().splitlines()) == 1


def test_train_missing_video_fails_cleanly(tmp_path):
    r = run("train", tmp_path / "nope.mp4", "--out", tmp_path / "run", *TINY)
    assert r.exit_code == 2
    assert "nope.mp4: file not found" in r.output and "Traceback" not in r.output


def test_train_skips_bad_videos_and_trains_on_the_rest(tmp_path):
    good = write_video(tmp_path / "good.mp4", numbered_frames(40))
    short = write_video(tmp_path / "short.mp4", numbered_frames(2))  # the tiny preset's k = 1 needs 2k+1 = 3 frames
    junk = tmp_path / "junk.mp4"
    junk.write_text("no video here")
    missing = tmp_path / "missing.mp4"
    r = run("train", good, short, junk, missing, "--out", tmp_path / "run", "--steps", 2, *TINY)
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


def test_train_without_videos_is_one_clean_line(tmp_path):
    r = run("train", "--out", tmp_path / "run", *TINY)
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == ["error: train: no VIDEOS given (pass video files, folders or glob patterns)"]
    assert not (tmp_path / "run").exists()


def test_train_rejects_an_unwritable_output(tmp_path):
    good = write_video(tmp_path / "good.mp4", numbered_frames(20))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run("train", good, "--out", blocker / "run", "--steps", 1, *TINY)
    assert r.exit_code == 2 and "not writable" in r.output


def test_convert_errors(tmp_path):
    r = run("convert", tmp_path / "missing.pkl", tmp_path / "out.pt")
    assert r.exit_code == 2 and "checkpoint not found" in r.output
    other = tmp_path / "other.pkl"
    torch.save({"weights": torch.ones(1)}, other)
    r = run("convert", other, tmp_path / "out.pt")
    assert r.exit_code == 2 and "not an original Selfee state_dict" in r.output


def test_debug_variable_shows_the_traceback(tmp_path):
    r = run("convert", tmp_path / "missing.pkl", tmp_path / "o.pt", env={"SELFEE_DEBUG": "1"})
    assert r.exit_code != 0 and r.exception is not None


def test_train_then_embed(tmp_path):
    v = write_video(tmp_path / "clip.mp4", numbered_frames(30))
    r = run("train", v, "--out", tmp_path / "run", "--steps", 2, *TINY)
    assert r.exit_code == 0, r.output
    r = run("embed", v, tmp_path / "missing.mp4", "--weights", tmp_path / "run" / "last.pt", "--out", tmp_path / "emb",
            "--device", "cpu")
    assert r.exit_code == 3  # partial: one video failed, the other was embedded
    assert (tmp_path / "emb" / "clip.npy").exists() and "missing.mp4" in r.output
    r = run("embed", v, "--weights", tmp_path / "nothing.pt", "--out", tmp_path / "emb")
    assert r.exit_code == 2 and "weights file not found" in r.output
