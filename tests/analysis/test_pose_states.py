"""Pose-derived fly states: hand-built poses with known answers, and the real SLEAP file."""

from __future__ import annotations

import numpy as np
import pytest

from selfee.analysis import io
from selfee.analysis.pose_states import (
    STATES,
    Pose,
    PoseStateOptions,
    fill_gaps,
    pose_states,
    read_sleap_h5,
    write_pose_states,
)

NODES = ["head", "thorax", "abdomen", "wingL", "wingR", "eyeL"]


def fly(thorax, heading_deg, wing_deg=(10.0, 10.0), body=10.0):
    """Key points of a fly: thorax position, heading, and each wing's angle from the backward axis."""
    h = np.radians(heading_deg)
    fwd = np.array([np.cos(h), np.sin(h)])
    left = np.array([-fwd[1], fwd[0]])
    t = np.asarray(thorax, float)
    pts = [t + fwd * body / 2, t, t - fwd * body / 2]
    for side, a in ((1, wing_deg[0]), (-1, wing_deg[1])):
        r = np.radians(a)
        pts.append(t + 6 * (-fwd * np.cos(r) + side * left * np.sin(r)))
    pts.append(t + fwd * body / 2 + left)
    return np.array(pts)


def synthetic_pair(fps=10.0):
    """120 frames; the male is track 1. Expected state per 20-frame block, in order:
    apart, close (still), following, wing extension, close (female behind him), unknown (head missing)."""
    frames = []
    mx = 0.0
    for i in range(120):
        block = i // 20
        male_wing = (10.0, 80.0) if block == 3 else (10.0, 10.0)
        if block in (2, 4):
            mx += 20.0 / fps  # 2 body lengths per second
        female_x = {0: mx + 100, 4: mx - 20}.get(block, mx + 20)
        frames.append([fly((female_x, 0), 0), fly((mx, 0), 0, male_wing)])
    xy = np.array(frames)  # frames x tracks x nodes x 2
    xy[5:8, :, 1] = np.nan  # a short gap: interpolated
    xy[100:120, 1, 0] = np.nan  # the male's head lost for 20 frames: no state
    return Pose(xy, NODES, ["track_0", "track_1"])


def test_states_of_a_hand_built_pose():
    labels, meas = pose_states(synthetic_pair(), PoseStateOptions(fps=10.0))
    assert int(meas["male_track"]) == 1
    assert meas["body_length_px"] == pytest.approx(10.0)
    want = ["apart", "close", "following", "wing_extension", "close", ""]
    for b, state in enumerate(want):
        inner = labels[b * 20 + 3 : b * 20 + 17]
        assert set(inner) == {state}, (b, set(inner))
    np.testing.assert_allclose(meas["wing_angle"][63:77], 80.0, atol=1e-6)
    np.testing.assert_allclose(meas["distance_bl"][23:37], 2.0, atol=1e-6)
    np.testing.assert_allclose(meas["speed_bl_s"][45:55], 2.0, atol=1e-6)
    np.testing.assert_allclose(meas["facing_deg"][83:97], 180.0, atol=1e-6)


def test_thresholds_move_the_states():
    labels, _ = pose_states(synthetic_pair(), PoseStateOptions(fps=10.0, male="1", wing_angle_deg=85.0, follow_speed=3.0))
    assert "wing_extension" not in set(labels) and "following" not in set(labels)
    forced, meas = pose_states(synthetic_pair(), PoseStateOptions(fps=10.0, male="track_0"))
    assert int(meas["male_track"]) == 0


def test_fill_gaps_only_short_interior_runs():
    x = np.array([0.0, np.nan, np.nan, 3.0, np.nan, np.nan, np.nan, np.nan, 8.0, np.nan])
    got = fill_gaps(x, 2)
    np.testing.assert_allclose(got[:4], [0, 1, 2, 3])
    assert np.isnan(got[4:8]).all() and np.isnan(got[9])


def test_real_courtship_pose(shared_data, tmp_path):
    h5 = shared_data / "labels" / "predictions.analysis.h5"
    if not h5.is_file():
        pytest.skip(f"{h5} not present")
    pose = read_sleap_h5(h5)
    assert pose.xy.shape == (3000, 2, 13, 2)
    res = write_pose_states(h5, tmp_path, stem="20190128_113421.120s")
    assert res["male_track"] == "track_0"  # the smaller fly, which sings
    counts = res["counts"]
    assert set(counts) == {*STATES, "(none)"}
    assert all(counts[s] > 100 for s in STATES)
    assert counts["(none)"] < 30  # nearly every frame gets a state
    assert 0.05 < counts["wing_extension"] / 3000 < 0.3
    lab = io.read_labels(res["labels"])
    assert len(lab.frames) == 3000 - counts["(none)"]
    # Courtship starts after the flies meet: no wing extension in the first 40 s.
    assert not np.any(lab.labels[lab.frames < 1000] == "wing_extension")
    assert (tmp_path / "pose_features" / "20190128_113421.120s.png").is_file()
