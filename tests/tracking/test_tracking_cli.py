"""The arena, prepare and track commands: outputs, per-video failures, one-line errors."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_video
from selfee.cli import app

cv2 = pytest.importorskip("cv2")
runner = CliRunner()
QUAD = "30,20 140,26 150,110 24,104"


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """176 x 128, 50 frames at 25 fps: a dark disc moving on a light floor."""
    ys, xs = np.mgrid[0:128, 0:176]
    frames = np.full((50, 128, 176, 3), 190, np.uint8)
    for t in range(50):
        frames[t][(xs - (50 + t)) ** 2 + (ys - 60) ** 2 <= 25] = 30
    return write_video(tmp_path_factory.mktemp("v") / "mouse.mp4", frames, fps=25, crf=0, g=10)


def test_track_writes_per_video_files_and_a_summary_and_reports_bad_inputs(tmp_path, video):
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    out = tmp_path / "out"
    r = run("track", video, junk, tmp_path / "missing.mp4", "--out", out, "--corners", QUAD, "--arena-length", 40)
    assert r.exit_code == 3, r.output
    assert "tracked 1 video(s)" in r.output and "2 failed" in r.output and "Traceback" not in r.output
    rows = list(csv.DictReader(open(out / "mouse_track.csv")))
    assert len(rows) == 50 and all(row["found"] == "1" for row in rows)
    assert set(rows[0]) == {"frame", "time_s", "x", "y", "speed", "zone", "found", "area"}
    (summary,) = list(csv.DictReader(open(out / "summary.csv")))
    assert summary["video"] == "mouse.mp4" and summary["arena"] == "open_field"
    assert float(summary["distance_cm"]) > 0 and "centre_time_s" in summary
    png = cv2.imread(str(out / "mouse_track.png"))
    assert png is not None and png.shape[1] > png.shape[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f["video"].split("/")[-1] for f in manifest["failed"]} == {"junk.mp4", "missing.mp4"}
    assert manifest["videos"][0]["arena"]["kind"] == "open_field"


def test_track_window_options_and_bad_option_values(tmp_path, video):
    r = run("track", video, "--out", tmp_path / "o", "--start", 1, "--duration", 0.4, "--no-plot", "--ellipse")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "o" / "mouse_track.csv")))
    assert [int(row["frame"]) for row in rows] == list(range(25, 35)) and "angle" in rows[0]
    assert not (tmp_path / "o" / "mouse_track.png").exists()
    bad = run("track", video, "--out", tmp_path / "o2", "--speed-filter", "gauss")
    assert bad.exit_code == 2 and bad.output.strip().splitlines() == [
        "error: speed filter must be one of mean, median, none (got 'gauss')"
    ]
    bad = run("track", video, "--out", tmp_path / "o3", "--corners", "1,2 3,4")
    assert bad.exit_code == 2 and "eight numbers" in bad.output


def test_arena_png_has_the_grid_and_the_warped_arena(tmp_path, video):
    r = run("arena", video, "--out", tmp_path / "grid.png", "--grid", 50)
    assert r.exit_code == 0, r.output
    img = cv2.imread(str(tmp_path / "grid.png"))
    assert img.shape == (128, 176, 3)
    # grid lines (yellow, blended) run through pixel column 50 and row 100, not column 51
    assert img[70, 50, 0] < img[70, 50, 2] - 40 and abs(int(img[70, 51, 0]) - int(img[70, 51, 2])) < 10
    r = run("arena", video, "--out", tmp_path / "check.png", "--corners", QUAD, "--size", 100)
    assert r.exit_code == 0, r.output
    assert cv2.imread(str(tmp_path / "check.png")).shape == (128, 176 + 8 + 100, 3)


def test_arena_picker_without_a_display_says_what_to_do(tmp_path, video, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    r = run("arena", video, "--pick", tmp_path / "c.json")
    assert r.exit_code == 2 and r.output.startswith("error: no display") and len(r.output.strip().splitlines()) == 1


def test_prepare_writes_the_preprocessed_video(tmp_path, video):
    import av

    r = run("prepare", video, "--out", tmp_path / "prep", "--write-video", "--corners", QUAD,
            "-s", "data.preprocess.arena_size=64", "--duration", 1)
    assert r.exit_code == 0, r.output
    assert "frames 0-24 (25), 64x64, open_field" in r.output
    with av.open(str(tmp_path / "prep" / "mouse.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 25 and frames[0].shape == (64, 64, 3)
    # the written frames are the Preprocessor's output (up to the H.264 encoding)
    import torch

    from selfee.config import PreprocessConfig
    from selfee.preprocess import Preprocessor
    from selfee.video import VideoReader, probe

    info = probe(video)
    pcfg = PreprocessConfig(arena="open_field", arena_corners=tuple(tuple(map(float, c.split(","))) for c in QUAD.split()),
                            arena_size=64)
    want = Preprocessor(pcfg, info)(torch.from_numpy(VideoReader(info).read(0, 1)).permute(0, 3, 1, 2))
    assert np.abs(want[0].permute(1, 2, 0).numpy().astype(int) - frames[0]).mean() < 3
    r = run("prepare", video, "--set", "data.preprocess.resize=[40,60]")
    assert r.exit_code == 0 and "176" not in r.output.split(":")[-1] and "60x40" in r.output
