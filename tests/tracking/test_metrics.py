"""Track measures on hand-made tracks: filters, speed, distance, zones, entries, the summary."""

import numpy as np
import pytest

from selfee.errors import ConfigError
from selfee.tracking.metrics import (
    normalize_filter,
    path_length,
    smooth_positions,
    speeds,
    summarize,
    unit_per_px,
    zone_entries,
    zones,
)
from selfee.video.arena import Arena

NAN = np.nan
# an arena whose warped frame is 100 px with a 20 % margin: centre 49.5, half-side 40
OF = Arena("open_field", ((0, 0), (99, 0), (99, 99), (0, 99)), size=100)
PM = Arena("plus_maze", ((0, 50), (99, 50), (50, 0), (50, 99)), size=100)


def test_filters_ignore_missing_frames_and_never_fill_them():
    xy = np.array([[0, 0], [1, 10], [2, 20], [NAN, NAN], [4, 40], [50, 50]], float)
    mean = smooth_positions(xy, 3, "mean")
    assert mean[1].tolist() == [1, 10] and mean[0].tolist() == [0.5, 5]
    assert mean[2].tolist() == [1.5, 15]  # the missing neighbour is left out
    assert np.isnan(mean[3]).all()
    med = smooth_positions(xy, 3, "median")
    assert med[4].tolist() == [27, 45]  # median of (4, 50): both available neighbours
    assert np.array_equal(smooth_positions(xy, 5, "none"), xy, equal_nan=True)
    assert normalize_filter("aver") == "mean"
    with pytest.raises(ConfigError):
        normalize_filter("gauss")


def test_speed_is_central_and_one_sided_at_gaps_and_ends():
    xy = np.array([[0, 0], [3, 4], [6, 8], [NAN, NAN], [20, 0], [NAN, NAN]], float)
    t = np.arange(6) * 0.5
    s = speeds(xy, t)
    assert s[0] == pytest.approx(10)  # forward difference: 5 px in 0.5 s
    assert s[1] == pytest.approx(10)  # central: 10 px in 1 s
    assert s[2] == pytest.approx(10)  # backward, next to the gap
    assert np.isnan(s[3]) and np.isnan(s[4]) and np.isnan(s[5])  # isolated frame: no neighbour


def test_path_length_bridges_gaps():
    xy = np.array([[0, 0], [3, 4], [NAN, NAN], [3, 8]], float)
    assert path_length(xy) == pytest.approx(9)
    assert path_length(np.full((3, 2), NAN)) == 0


def test_open_field_zones_use_the_centre_fraction():
    xy = np.array([[49.5, 49.5], [49.5 + 19.9, 49.5], [49.5 + 20.1, 49.5], [49.5, 10], [NAN, NAN]])
    assert zones(xy, OF, 0.5).tolist() == ["centre", "centre", "periphery", "periphery", ""]
    assert zones(xy, OF, 0.6).tolist()[2] == "centre"
    assert zones(xy, None).tolist() == [""] * 5


def test_plus_maze_zones_and_ratios():
    c = 49.5
    # arm_width 0.1 of the 90 px end-to-end length: the centre square has half-side 4.5
    xy = np.array([[c - 30, c], [c + 30, c + 2], [c, c - 30], [c + 1, c + 30], [c + 4, c - 4], [c + 5, c]])
    z = zones(xy, PM, arm_width=0.1)
    assert z.tolist() == ["open_1", "open_2", "closed_1", "closed_2", "centre", "open_2"]
    seq = np.array(["closed_1"] * 4 + ["centre"] * 2 + ["open_1"] * 2 + [""] * 3 + ["open_1", "centre", "closed_2"])
    row = summarize(np.zeros((len(seq), 2)), np.zeros(len(seq)), seq, fps=2.0, arena=PM)
    assert row["open_1_entries"] == 1 and row["closed_2_entries"] == 1 and row["closed_1_entries"] == 0
    assert row["open_time_s"] == 1.5 and row["closed_time_s"] == 2.5 and row["centre_time_s"] == 1.5
    assert row["open_time_ratio"] == pytest.approx(1.5 / 4.0)
    assert row["open_entry_ratio"] == pytest.approx(0.5)


def test_entries_count_moves_into_a_zone_not_the_start_or_returns_after_a_gap():
    z = np.array(["centre", "centre", "periphery", "", "", "periphery", "centre", "", "centre"])
    assert zone_entries(z, "centre") == 1
    assert zone_entries(z, "periphery") == 1


def test_summary_in_real_units():
    xy = np.array([[0, 0], [10, 0], [NAN, NAN]], float)
    row = summarize(xy, np.array([100.0, 100.0, NAN]), zones(xy, OF), fps=10.0, arena=OF, unit_per_px=0.5)
    assert row["frames_found"] == 2 and row["frames_missing"] == 1
    assert row["distance_px"] == 10 and row["distance_units"] == 5 and row["mean_speed_units_s"] == 50
    assert row["centre_fraction"] == 0  # both positions lie in the periphery


def test_units_per_pixel_from_the_arena_length():
    # the arena spans 2 x 40 = 80 warped pixels: 40 cm across is 0.5 cm a pixel
    assert unit_per_px(OF, 40.0) == 0.5
    assert unit_per_px(None, 40.0) is None and unit_per_px(OF, None) is None
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match="arena length"):
            unit_per_px(OF, bad)
