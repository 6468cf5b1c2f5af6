"""The demo's generated behaviour video and a very short end-to-end run."""

import json

import numpy as np

from selfee.demo import STATES, knn_blocked_scores, run_demo, synthetic_behaviour


def test_synthetic_behaviour_has_bouts_of_every_state():
    frames, labels = synthetic_behaviour(400, size=64, seed=1)
    assert frames.shape == (400, 64, 64, 3) and frames.dtype == np.uint8
    assert set(labels.tolist()) == set(range(len(STATES)))
    changes = np.flatnonzero(np.diff(labels)) + 1
    bouts = np.diff(np.concatenate([[0], changes, [400]]))
    assert bouts[:-1].min() >= 30 and bouts.max() <= 80


def test_knn_scores_on_separable_features():
    y = np.repeat([0, 1, 2, 0, 1, 2], 50)
    x = np.eye(3)[y] + 0.01 * np.random.default_rng(0).normal(size=(300, 3))
    s = knn_blocked_scores(x, y, k=3, blocks=6)
    assert s["accuracy"] == 1.0 and s["macro_f1"] == 1.0


def test_demo_end_to_end(tmp_path):
    report = run_demo(tmp_path, steps=3, device="cpu", frames=160)
    assert set(report["knn"]) == {"trained", "untrained"}
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["frames"] == 160 and (tmp_path / "run" / "last.pt").exists()
    assert np.load(tmp_path / "embed_trained" / "demo_behaviour.npy").shape[0] == 160
