"""Anomaly scores: an injected, recurring novel behaviour is flagged; the rest is not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import bouts, cluster_sequence, numbered_frames, write_embed, write_video
from selfee.analysis.anomaly import AnomalyOptions, anomalous_ranges, detect
from selfee.errors import SelfeeError


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def groups(tmp_path, rng):
    centers = unit(rng.standard_normal((4, 12)))  # 0-2 normal behaviours, 3 the mutant's novel one
    for g, n_vid in (("ref", 2), ("ctrl", 2), ("query", 1)):
        for v in range(n_vid):
            states = bouts(rng, 600, 3, 30)
            if g == "query":
                states[200:230] = 3
                states[450:480] = 3  # it recurs, so the video itself has look-alikes outside +-w
            write_embed(tmp_path / g, f"{g}{v}", cluster_sequence(rng, centers, states, 0.05), fps=25)
    return tmp_path


def test_injected_anomaly_is_flagged_and_nothing_else(groups):
    opts = AnomalyOptions(window=20)
    res = detect(groups / "ref", groups / "query", groups / "out", groups / "ctrl", opts)
    assert res.threshold_source.startswith("control group")
    (q,) = res.query
    flagged = np.flatnonzero(q.score > res.threshold)
    assert set(flagged) <= set(range(200, 230)) | set(range(450, 480))
    assert len(flagged) >= 50
    assert [(int(q.frames[a]), int(q.frames[b - 1])) for a, b in res.ranges["query0"]] == [(200, 229), (450, 479)]
    out = groups / "out"
    rows = (out / "anomalous_ranges.csv").read_text().splitlines()
    assert rows[0] == "video,start_frame,end_frame,start_s,end_s,anomalous_frames,peak_score,peak_frame"
    assert rows[1].startswith("query0,200,229,8,9.16,30,")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["query"]["query0"]["anomalous_frames"] == len(flagged)
    assert (out / "scores" / "query0.csv").is_file() and (out / "control_scores" / "ctrl1.csv").is_file()
    assert (out / "anomaly_scores.png").is_file()


def test_threshold_is_the_control_maximum_or_a_quantile(groups):
    full = detect(groups / "ref", groups / "query", groups / "o1", groups / "ctrl", AnomalyOptions(window=20))
    ctrl = np.concatenate([np.loadtxt(p, delimiter=",", skiprows=1, usecols=2)
                           for p in sorted((groups / "o1" / "control_scores").glob("*.csv"))])
    assert full.threshold == pytest.approx(ctrl.max(), abs=1e-5)
    q90 = detect(groups / "ref", groups / "query", groups / "o2", groups / "ctrl", AnomalyOptions(window=20, quantile=0.9))
    assert q90.threshold == pytest.approx(np.quantile(ctrl, 0.9), abs=1e-5)


def test_without_control_the_reference_is_scored_leave_one_out(groups):
    res = detect(groups / "ref", groups / "query", groups / "out", None, AnomalyOptions(window=20))
    assert "leave-one-video-out" in res.threshold_source
    # The query directory may be the reference itself: a video is never its own reference.
    same = detect(groups / "ref", groups / "ref", groups / "o2", None, AnomalyOptions(window=20))
    assert all(np.nanmin(v.ref_distance) > 1e-4 for v in same.query)
    with pytest.raises(SelfeeError, match="--control"):
        detect(groups / "query", groups / "ref", groups / "o3", None, AnomalyOptions(window=20))


def test_ranges_merge_gaps_and_drop_short_runs():
    frames = np.arange(20)
    flags = np.zeros(20, bool)
    flags[[2, 3, 5, 6, 7, 12]] = True
    assert anomalous_ranges(frames, flags) == [(2, 4), (5, 8), (12, 13)]
    assert anomalous_ranges(frames, flags, merge_gap=1) == [(2, 8), (12, 13)]
    assert anomalous_ranges(frames, flags, min_frames=2) == [(2, 4), (5, 8)]


def test_anomaly_clip_of_the_flagged_frames(tmp_path, rng):
    from selfee.analysis.anomaly import AnomalyOptions, detect
    from selfee.video import probe

    n = 60
    centers = unit(rng.standard_normal((3, 6)))
    s = np.zeros(n, int)
    s[10:15] = 2
    s[40:45] = 2  # the novel state, twice
    write_embed(tmp_path / "q", "clipvid", cluster_sequence(rng, centers, s, 0.01), fps=25)
    write_embed(tmp_path / "r", "ref", cluster_sequence(rng, centers, np.arange(n) % 2, 0.01), fps=25)
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "clipvid.mp4", numbered_frames(n), crf=0)
    res = detect(tmp_path / "r", tmp_path / "q", tmp_path / "out", None,
                 AnomalyOptions(window=5, threshold=0.5), videos_dir=tmp_path / "videos")
    assert [(int(a), int(b)) for a, b in res.ranges["clipvid"]] == [(10, 15), (40, 45)]
    clip = probe(tmp_path / "out" / "clips" / "clipvid_anomalies.mp4")
    assert clip.frames == 10
