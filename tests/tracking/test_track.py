"""Tracking on generated videos with known paths: centroids, missing frames, zones, speed, arena mapping."""

import numpy as np
import pytest

from conftest import write_video
from selfee.config import PreprocessConfig
from selfee.tracking import TrackOptions, sample_frames, summary_row, track_csv, track_video
from selfee.video import probe
from selfee.video.arena import Arena

pytest.importorskip("cv2")

FPS = 25
ABSENT = range(30, 35)  # frames without the animal


def disc_frames(centres, h, w, r=5, floor=200, animal=40, absent=()):
    """T x H x W x 3 frames: a uniform floor and one disc per frame (none in ``absent``)."""
    ys, xs = np.mgrid[0:h, 0:w]
    out = np.full((len(centres), h, w, 3), floor, np.uint8)
    for t, (cx, cy) in enumerate(centres):
        if t not in absent:
            out[t][(xs - cx) ** 2 + (ys - cy) ** 2 <= r * r] = animal
    return out


@pytest.fixture(scope="module")
def line_video(tmp_path_factory):
    """120 x 120, a disc moving 1 px per frame along y = 60 from x = 20 to 99; absent in frames 30-34."""
    path = [(20 + t, 60) for t in range(80)]
    frames = disc_frames(path, 120, 120, absent=ABSENT)
    p = write_video(tmp_path_factory.mktemp("v") / "line.mp4", frames, fps=FPS, crf=0, g=16)
    return probe(p), np.array(path, float)


# an open field whose warped frame is the video itself: corners at centre +- half-side (120 px, 20 % margin)
IDENTITY = ((11.5, 11.5), (107.5, 11.5), (107.5, 107.5), (11.5, 107.5))


def test_centroids_follow_the_path_and_missing_frames_are_marked(line_video):
    info, path = line_video
    tr = track_video(info, PreprocessConfig(), TrackOptions(speed_filter="none"))
    assert tr.polarity == "dark"
    found = tr.found
    assert found.sum() == 75 and not found[list(ABSENT)].any()
    assert np.abs(tr.xy[found] - path[found]).max() < 0.05
    assert tr.area[found].min() > 60 and (tr.area[~found] == 0).all()
    csv = track_csv(tr).splitlines()
    assert csv[0] == "frame,time_s,x,y,speed,zone,found,area"
    assert csv[1 + 31].split(",")[2:7] == ["", "", "", "", "0"]
    assert csv[1 + 10].startswith("10,0.400000,30.000,60.000,25.000,")
    row = summary_row(tr, TrackOptions(speed_filter="none"))
    assert row["distance_px"] == pytest.approx(79, abs=0.1)  # the gap is bridged
    assert row["frames_missing"] == 5


def test_speed_and_centre_zone_time_of_a_known_path(line_video):
    info, _ = line_video
    cfg = PreprocessConfig(arena="open_field", arena_corners=IDENTITY, arena_size=120)
    opts = TrackOptions(speed_window=5, speed_filter="mean")
    tr = track_video(info, cfg, opts)
    # the mean filter keeps a straight constant-speed path: 1 px per frame = 25 px/s away from gaps and ends
    assert tr.speed[5:25] == pytest.approx(np.full(20, 25.0), abs=0.05)
    # centre zone: |x - 59.5| < 0.5 * 48 -> x in 36..83 -> frames 16..63, less the 5 absent ones
    assert np.flatnonzero(tr.zone == "centre").tolist() == [t for t in range(16, 64) if t not in ABSENT]
    row = summary_row(tr, opts)
    assert row["centre_time_s"] == pytest.approx(43 / FPS)
    assert row["centre_entries"] == 1 and row["periphery_entries"] == 1
    assert row["centre_fraction"] == pytest.approx(43 / 75)


def test_window_start_and_duration_are_respected(line_video):
    info, path = line_video
    tr = track_video(info, PreprocessConfig(start_s=0.4, duration_s=1.0), TrackOptions())
    assert tr.frames.tolist() == list(range(10, 35))
    assert tr.times[0] == pytest.approx(0.4)
    assert np.abs(tr.xy[:20] - path[10:30]).max() < 0.05


def test_perspective_arena_positions_and_the_arena_masks_distractors(tmp_path):
    quad = ((30.0, 20.0), (140.0, 26.0), (150.0, 110.0), (24.0, 104.0))
    arena = Arena("open_field", quad, size=100, margin=0.1)
    truth = np.array([[20 + 0.75 * t, 30 + 0.5 * t] for t in range(60)])  # arena pixels
    centres = np.rint(arena.to_video(truth))  # where the camera sees them, snapped to pixels
    frames = disc_frames(centres, 128, 176, r=4)
    # a bigger dark blob moving outside the arena (top left corner of the frame)
    ys, xs = np.mgrid[0:128, 0:176]
    for t in range(60):
        frames[t][(xs - 6) ** 2 + (ys - (10 + t % 40 * 2)) ** 2 <= 36] = 20
    info = probe(write_video(tmp_path / "persp.mp4", frames, fps=FPS, crf=0, g=8))
    cfg = PreprocessConfig(arena="open_field", arena_corners=quad, arena_size=100, arena_margin=0.1)
    tr = track_video(info, cfg, TrackOptions(min_area=10))
    assert tr.found.all()
    expected = arena.to_arena(centres)
    assert np.abs(tr.xy - expected).max() < 0.5  # the centroid of the mapped blob ~ the mapped centre
    free = track_video(info, PreprocessConfig(), TrackOptions(min_area=10))
    assert np.abs(free.xy[:, 0] - 6).max() < 1  # without the arena, the bigger blob wins


def test_a_light_animal_on_a_dark_floor_and_its_ellipse(tmp_path):
    n, h, w = 40, 64, 96
    frames = np.full((n, h, w, 3), 30, np.uint8)
    for t in range(n):
        frames[t, 30:36, 10 + t : 30 + t] = 220  # a 20 x 6 bar moving right
    info = probe(write_video(tmp_path / "light.mp4", frames, fps=FPS, crf=0, g=4))
    idx, samples, limited = sample_frames(info, 0, n, 20)
    assert len(idx) == 10 and limited  # keyframes only (every 4th), luma in the limited range
    tr = track_video(info, PreprocessConfig(), TrackOptions(ellipse=True, open_px=0))
    assert tr.polarity == "light"
    assert np.abs(tr.xy - np.c_[19.5 + np.arange(n), np.full(n, 32.5)]).max() < 0.05
    major, minor, angle = np.nanmedian(tr.ellipse, axis=0)
    assert angle == pytest.approx(0, abs=1e-6) or angle == pytest.approx(180, abs=1e-6)
    # axes are 4 standard deviations; n pixels in a row have variance (n^2 - 1) / 12
    assert major == pytest.approx(4 * np.sqrt((20**2 - 1) / 12), rel=1e-6)
    assert minor == pytest.approx(4 * np.sqrt((6**2 - 1) / 12), rel=1e-6)
