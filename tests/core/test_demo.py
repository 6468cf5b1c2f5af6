"""The demo's generated behaviour video and a very short end-to-end run."""

import json

import numpy as np

from selfee.demo import run_demo
from selfee.demo_video import STATES, synthetic_behaviour


def test_synthetic_behaviour_has_bouts_of_every_state():
    frames, labels = synthetic_behaviour(400, size=64, seed=1)
    assert frames.shape == (400, 64, 64, 3) and frames.dtype == np.uint8
    assert set(labels.tolist()) == set(range(len(STATES)))
    changes = np.flatnonzero(np.diff(labels)) + 1
    bouts = np.diff(np.concatenate([[0], changes, [400]]))
    assert bouts[:-1].min() >= 30 and bouts.max() <= 80
    again, _ = synthetic_behaviour(400, size=64, seed=1)
    assert np.array_equal(frames, again)


def test_states_do_not_follow_the_nuisances():
    """Brightness of the floor is drawn per bout independently of the state: every state is seen both
    darker and brighter than the median floor."""
    frames, labels = synthetic_behaviour(1500, size=32, seed=0)
    floor = np.median(frames[..., 0].reshape(len(frames), -1), axis=1)
    mid = np.median(floor)
    for s in range(len(STATES)):
        assert (floor[labels == s] < mid).any() and (floor[labels == s] > mid).any()


def test_still_states_do_not_move_and_run_does():
    frames, labels = synthetic_behaviour(600, size=64, seed=2)
    diff = (np.abs(np.diff(frames[..., 0].astype(int), axis=0)) > 25).sum(axis=(1, 2))  # beyond the sensor noise
    same = labels[1:] == labels[:-1]
    rest, run = same & (labels[1:] == STATES.index("rest")), same & (labels[1:] == STATES.index("run"))
    assert diff[run].mean() > 10 * max(diff[rest].mean(), 1)


def test_demo_end_to_end(tmp_path):
    report = run_demo(tmp_path, steps=3, device="cpu", frames=200, seed=1)
    assert set(report["knn"]) == {"trained", "untrained", "pixels"}
    for s in report["knn"].values():
        assert set(s) == {"macro_f1", "accuracy"} and 0 <= s["macro_f1"] <= 1
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["frames"] == 200 and saved["seed"] == 1 and (tmp_path / "run" / "last.pt").exists()
    assert np.load(tmp_path / "embed_trained" / "demo_behaviour.npy").shape[0] == 200
    assert (tmp_path / "run" / "quality.png").exists()
    # the trained row is the k-NN of the embedding `embed` wrote; the monitor's last row is the same checkpoint
    assert saved["knn"]["trained"]["macro_f1"] == saved["quality_curve"][-1]["macro_f1"]
