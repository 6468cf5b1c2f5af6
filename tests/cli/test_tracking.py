"""The arena, prepare and track commands: outputs, per-video failures, one-line errors."""

import csv
import json

import numpy as np
import pytest

from conftest import write_video

from .conftest import run

cv2 = pytest.importorskip("cv2")
QUAD = "30,20 140,26 150,110 24,104"


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


def test_bad_corners_of_one_video_fail_that_video_only(tmp_path, video, tiny_config):
    """The same policy in every command: track, prepare, train and embed report each bad video in one line
    and go on with the others."""
    import shutil

    vids, corners = tmp_path / "vids", tmp_path / "corners"
    vids.mkdir()
    corners.mkdir()
    for stem in ("mouse", "rat", "vole"):
        shutil.copy(video, vids / f"{stem}.mp4")
    quad = [[float(v) for v in c.split(",")] for c in QUAD.split()]
    (corners / "mouse.json").write_text(json.dumps(quad))
    (corners / "rat.json").write_text(json.dumps([quad[0], quad[2], quad[1], quad[3]]))  # a bow tie
    (corners / "vole.json").write_text(json.dumps({"videos": {"a.mp4": quad, "b.mp4": quad}}))  # no entry for vole
    want = {"rat.mp4": "do not form a convex quadrilateral", "vole.mp4": "none named vole.mp4 or vole"}
    for cmd in (["track", "--out", tmp_path / "out", "--no-plot"], ["prepare"]):
        r = run(cmd[0], vids, "--corners", corners, *cmd[1:])
        assert r.exit_code == 3, r.output
        assert "Traceback" not in r.output
        for name, problem in want.items():
            (line,) = [x for x in r.output.splitlines() if name in x]  # one line per bad video
            assert problem in line, line
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [v["stem"] for v in manifest["videos"]] == ["mouse"] and manifest["videos"][0]["arena"]["kind"] == "open_field"
    assert sorted(f["video"].split("/")[-1] for f in manifest["failed"]) == ["rat.mp4", "vole.mp4"]
    assert (tmp_path / "out" / "mouse_track.csv").is_file() and not (tmp_path / "out" / "rat_track.csv").exists()
    assert "mouse.mp4: frames 0-49 (50)" in r.output  # prepare went on with the good video
    r = run("train", vids, "--corners", corners, "--out", tmp_path / "run", "--steps", 1, "--config", tiny_config())
    assert r.exit_code == 0 and "training on 1 videos" in r.output and "2 skipped" in r.output, r.output
    r2 = run("embed", vids, "--corners", corners, "--weights", tmp_path / "run" / "last.pt", "--out", tmp_path / "emb",
             "--device", "cpu")
    assert r2.exit_code == 3 and (tmp_path / "emb" / "mouse.npy").is_file(), r2.output
    for out in (r.output, r2.output):
        assert "Traceback" not in out
        for name, problem in want.items():
            (line,) = [x for x in out.splitlines() if name in x]
            assert problem in line, line


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


def test_a_bad_arena_kind_and_a_missing_output_are_usage_errors(tmp_path, video):
    """Exit 2 with the option named, as for any bad option value, not an unexpected error's exit 1."""
    r = run("track", video, "--out", tmp_path / "o", "--arena", "cat")
    assert r.exit_code == 2 and "--arena" in r.output and "must be open_field or plus_maze" in r.output
    assert "SELFEE_DEBUG" not in r.output and not (tmp_path / "o").exists()
    r = run("arena", video)
    assert r.exit_code == 2 and "give --out PNG, --pick FILE, or both" in r.output


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
    from selfee.video import VideoReader, probe
    from selfee.video.preprocess import Preprocessor

    info = probe(video)
    pcfg = PreprocessConfig(arena="open_field", arena_corners=tuple(tuple(map(float, c.split(","))) for c in QUAD.split()),
                            arena_size=64)
    want = Preprocessor(pcfg, info)(torch.from_numpy(VideoReader(info).read(0, 1)).permute(0, 3, 1, 2))
    assert np.abs(want[0].permute(1, 2, 0).numpy().astype(int) - frames[0]).mean() < 3
    r = run("prepare", video, "--set", "data.preprocess.resize=[40,60]")
    assert r.exit_code == 0 and "176" not in r.output.split(":")[-1] and "60x40" in r.output


def test_track_a_plus_maze_video_end_to_end(tmp_path):
    """A dark animal walks on a bright plus maze: centre -> open arm -> centre -> closed arm -> centre -> other open arm."""
    cx, cy, arm, half_w, step = 90, 80, 70, 8, 3  # maze centre, arm length and half-width, px per frame
    path = [(cx, cy)] * 3
    for tx, ty in ((cx + 60, cy), (cx, cy), (cx, cy + 60), (cx, cy), (cx - 60, cy)):
        x0, y0 = path[-1]
        n = max(abs(tx - x0), abs(ty - y0)) // step
        path += [(x0 + (tx - x0) * i // n, y0 + (ty - y0) * i // n) for i in range(1, n + 1)]
    path = np.array(path, float)
    ys, xs = np.mgrid[0:160, 0:180]
    maze = ((np.abs(ys - cy) <= half_w) & (np.abs(xs - cx) <= arm)) | ((np.abs(xs - cx) <= half_w) & (np.abs(ys - cy) <= arm))
    frames = np.full((len(path), 160, 180, 3), 20, np.uint8)
    frames[:, maze] = 200
    for t, (x, y) in enumerate(path):
        frames[t][(xs - x) ** 2 + (ys - y) ** 2 <= 16] = 50
    video = write_video(tmp_path / "epm.mp4", frames, fps=25, crf=0)

    # The known path's zones, in video pixels: the warped maze is 2 x 225 px end to end (500 px, 10 %
    # margin) for 2 x 70 video px, so the centre square (--arm-width 0.1: half-side 22.5 warped px) is
    # +-7 video px around the centre. The path never comes within 1 px of a zone border.
    dx, dy = path[:, 0] - cx, path[:, 1] - cy
    want = np.where(np.abs(dx) > np.abs(dy), np.where(dx < 0, "open_1", "open_2"), np.where(dy < 0, "closed_1", "closed_2"))
    want[(np.abs(dx) <= 7) & (np.abs(dy) <= 7)] = "centre"
    corners = f"{cx - arm},{cy} {cx + arm},{cy} {cx},{cy - arm} {cx},{cy + arm}"  # open-arm ends, closed-arm ends
    r = run("track", video, "--out", tmp_path / "out", "--corners", corners, "--arena", "plus_maze",
            "--speed-filter", "none", "--no-plot")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "out" / "epm_track.csv")))
    assert len(rows) == len(path) and all(row["found"] == "1" for row in rows)
    xy = np.array([[float(row["x"]), float(row["y"])] for row in rows])
    np.testing.assert_allclose(xy, 249.5 + (path - [cx, cy]) * 225 / arm, atol=1.0)  # warped-arena pixels
    got = np.array([row["zone"] for row in rows])
    assert (got != want).sum() <= 2, [(t, w, g) for t, (w, g) in enumerate(zip(want, got)) if w != g]
    (s,) = list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))
    assert s["arena"] == "plus_maze"
    entries = {"open_1": 1, "open_2": 1, "closed_1": 0, "closed_2": 1, "centre": 2}
    assert {z: int(s[f"{z}_entries"]) for z in entries} == entries
    for z in entries:
        assert float(s[f"{z}_time_s"]) == pytest.approx((want == z).sum() / 25, abs=2 / 25), z
    n_open, n_closed = np.isin(want, ["open_1", "open_2"]).sum(), (want == "closed_2").sum()
    assert min(n_open, n_closed) > 30  # the path really spends time in both kinds of arm
    assert float(s["open_entry_ratio"]) == pytest.approx(2 / 3, abs=1e-4)  # the summary keeps 4 decimals
    assert float(s["open_time_ratio"]) == pytest.approx(n_open / (n_open + n_closed), abs=0.02)
