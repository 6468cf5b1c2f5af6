"""k-NN classification: the vote against a hand reference, leave-one-video-out, outputs on clustered data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import bouts, cluster_sequence, write_embed
from selfee.analysis.classify import (
    KnnOptions,
    LabelledSeq,
    classify,
    cross_validate,
    knn_scores,
    leave_one_out,
    predict,
    reference_rows,
)
from selfee.errors import SelfeeError


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_vote_matches_a_direct_computation(rng):
    ref = rng.standard_normal((30, 5))
    ref_y = np.array([0] * 20 + [1] * 7 + [2] * 3)
    q = rng.standard_normal((9, 5))
    opts = KnnOptions(k=6, tau=0.1, block_elems=16)
    got = knn_scores(q, [ref[:11], ref[11:]], ref_y, 4, opts)
    sims = unit(q) @ unit(ref).T
    want = np.zeros((9, 4))
    for i in range(9):
        for j in np.argsort(-sims[i])[:6]:
            want[i, ref_y[j]] += np.exp((sims[i, j] - 1) / 0.1)
    want *= np.array([30 / 20, 30 / 7, 30 / 3, 0])  # N / N_c; class 3 is not in the reference
    np.testing.assert_allclose(got, want, rtol=1e-5)
    unbalanced = knn_scores(q, [ref], ref_y, 4, KnnOptions(k=6, tau=0.1, balance=False))
    np.testing.assert_allclose(unbalanced[:, :3] * [30 / 20, 30 / 7, 30 / 3], want[:, :3], rtol=1e-5)


def test_mode_smoothing_removes_isolated_flips():
    scores = np.zeros((11, 2))
    scores[:, 0] = 1
    scores[5, 1] = 2  # one frame voted for class 1
    pred, _ = predict(scores, KnnOptions(smooth="mode", smooth_window=3))
    assert pred.tolist() == [0] * 11
    pred, _ = predict(scores, KnnOptions(smooth="none"))
    assert pred[5] == 1


def test_leave_one_out_never_puts_a_video_in_its_own_reference(rng):
    folds = list(leave_one_out(4))
    assert [i for i, _ in folds] == [0, 1, 2, 3]
    assert all(i not in ref and sorted(ref + [i]) == [0, 1, 2, 3] for i, ref in folds)
    # Each video has its own cluster and a class only it has. If it were in its own reference its
    # frames' nearest neighbours would be themselves and vote for that class.
    centers = unit(rng.standard_normal((3, 8)))
    seqs = []
    for v in range(3):
        x = centers[v] + 0.01 * rng.standard_normal((40, 8))
        y = np.where(np.arange(40) < 20, 3 + v, v)  # classes 3/4/5 exist in one video only
        seqs.append(LabelledSeq(f"v{v}", np.arange(40), np.arange(40) / 30, x, y))
    seen = []
    preds, _ = cross_validate(seqs, 6, KnnOptions(k=1, smooth="none"), on_fold=lambda i, ref: seen.append((i, ref)))
    assert seen == [(0, [1, 2]), (1, [0, 2]), (2, [0, 1])]
    for v, p in enumerate(preds):
        assert 3 + v not in set(p.tolist())


def _clustered_dataset(tmp_path, rng, n_videos=3, n=600, k=3):
    centers = unit(rng.standard_normal((k, 16)))
    truth = {}
    for v in range(n_videos):
        states = bouts(rng, n, k, 40)
        write_embed(tmp_path / "emb", f"vid{v}", cluster_sequence(rng, centers, states, 0.08))
        truth[f"vid{v}"] = states
    lab = tmp_path / "labels"
    lab.mkdir()
    names = np.array(["chase", "groom", "rest"])
    for v, (stem, states) in enumerate(truth.items()):
        if v == 0:  # the text format: 1-based inclusive ranges, with frames 0-9 left unlabelled
            starts = np.r_[10, np.flatnonzero(np.diff(states[10:])) + 11]
            stops = np.r_[starts[1:], n]
            lines = ["# start end label"] + [f"{a + 1} {b} {names[states[a]]}" for a, b in zip(starts, stops)]
            (lab / f"{stem}.txt").write_text("\n".join(lines) + "\n")
        else:
            (lab / f"{stem}.csv").write_text("frame,label\n" + "".join(f"{i},{names[s]}\n" for i, s in enumerate(states)))
    return truth


def test_classify_finds_clustered_behaviours_and_writes_outputs(tmp_path, rng):
    truth = _clustered_dataset(tmp_path, rng)
    opts = KnnOptions(k=20, features="mean_std", feature_window=5, smooth="mode", smooth_window=5, block_elems=1 << 16)
    res = classify(tmp_path / "emb", tmp_path / "labels", tmp_path / "out", opts)
    assert res.classes == ["chase", "groom", "rest"]
    assert res.pooled["macro_f1"] > 0.95 and res.pooled["mAP"] > 0.95
    assert res.pooled["frames"] == sum(len(s) for s in truth.values()) - 10  # unlabelled frames excluded
    out = tmp_path / "out"
    for name in ("metrics.json", "per_video.csv", "per_class.csv", "confusion.csv", "confusion.png", "ethogram.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["per_video"]) == {"vid0", "vid1", "vid2"}
    assert np.sum(m["confusion"]) == res.pooled["frames"]
    pred = (out / "predictions" / "vid0.csv").read_text().splitlines()
    assert pred[0].startswith("frame,time_s,true,predicted,score_chase")
    assert pred[1].split(",")[2] == ""  # frame 0 has no label
    assert len(pred) == 601


def test_classify_segments_a_single_video(tmp_path, rng):
    _clustered_dataset(tmp_path, rng, n_videos=1, n=900)
    with pytest.raises(SelfeeError, match="at least two"):
        classify(tmp_path / "emb", tmp_path / "labels", tmp_path / "out", KnnOptions(k=10))
    res = classify(tmp_path / "emb", tmp_path / "labels", tmp_path / "out", KnnOptions(k=10, smooth="none"), segments=3)
    assert list(res.per_video) == ["vid0#1", "vid0#2", "vid0#3"]
    assert res.pooled["macro_f1"] > 0.9


def test_bad_label_file_is_reported_and_the_rest_still_run(tmp_path, rng):
    _clustered_dataset(tmp_path, rng, n_videos=3, n=200)
    (tmp_path / "labels" / "vid2.csv").write_text("frame,label\n1,chase\noops,rest\n")
    res = classify(tmp_path / "emb", tmp_path / "labels", tmp_path / "out", KnnOptions(k=5))
    assert list(res.per_video) == ["vid0", "vid1"]
    assert len(res.errors) == 1 and "vid2.csv:3:" in str(res.errors[0])


def test_gap_leaves_out_only_the_held_out_videos_own_frames_near_it():
    def seg(name, source, lo, hi):
        f = np.arange(lo, hi)
        return LabelledSeq(name, f, f / 30, np.zeros((len(f), 2)), np.zeros(len(f), np.int64), source=source)

    seqs = [seg("a#1", "a", 0, 50), seg("a#2", "a", 50, 100), seg("b#1", "b", 0, 50), seg("b#2", "b", 50, 100)]
    rows = reference_rows(seqs, 0, [1, 2, 3], gap=10)
    assert [seqs[j].frames[r].tolist() for j, r in zip([1, 2, 3], rows)] == [
        list(range(60, 100)), list(range(0, 50)), list(range(50, 100))]
    rows = reference_rows(seqs, 1, [0, 2, 3], gap=0)
    assert [len(r) for r in rows] == [50, 50, 50]


@pytest.mark.parametrize("gap", [0, 8])
def test_segments_never_vote_with_frames_within_the_gap(tmp_path, rng, gap):
    # A random walk: a frame's nearest neighbours are the frames next to it. Each run of 4 frames is
    # its own class, so with k = 1 the predicted label c says the voting reference frame is one of
    # frames 4c..4c+3. Segment bounds (0, 40, 80, 120) and the gap are multiples of 4, so the
    # excluded frames are whole classes.
    n, segments = 120, 3
    write_embed(tmp_path / "emb", "walk", np.cumsum(rng.standard_normal((n, 12)), axis=0))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "walk.csv").write_text("frame,label\n" + "".join(f"{i},{i // 4}\n" for i in range(n)))
    res = classify(tmp_path / "emb", tmp_path / "labels", tmp_path / "out",
                   KnnOptions(k=1, smooth="none", gap=gap, block_elems=1 << 12), segments=segments)
    assert list(res.per_video) == ["walk#1", "walk#2", "walk#3"]
    near = 0
    for name in res.per_video:
        rows = [r.split(",") for r in (tmp_path / "out" / "predictions" / f"{name}.csv").read_text().splitlines()[1:]]
        frames = [int(r[0]) for r in rows]
        voters = 4 * np.array([int(r[3]) for r in rows])  # the first frame of the voter's class
        lo, hi = min(frames), max(frames)
        assert not ((voters >= lo) & (voters <= hi)).any()  # never its own segment
        near += int(((voters >= lo - 8) & (voters <= hi + 8)).sum())
    if gap:
        assert near == 0
    else:
        assert near > 0  # without the gap, frames at the boundaries vote for their neighbours across it
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["options"]["gap"] == gap and m["protocol"].startswith("leave-one-segment-out")
