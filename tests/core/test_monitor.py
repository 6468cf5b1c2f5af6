"""The training-time k-NN quality monitor (selfee.monitor) and its hook in the trainer."""

import csv

import numpy as np
import pytest
import torch

from selfee.monitor import FIELDS, QualityMonitor, embed_frames, knn_opts, knn_quality, load_eval_set
from tests.conftest import bouts, write_embed, write_video


def test_knn_quality_separable_and_chance():
    rng = np.random.default_rng(0)
    y = bouts(rng, 600, 3)
    idx = np.arange(600)
    x = np.eye(3)[y] + 0.05 * rng.standard_normal((600, 3))
    s = knn_quality(x, idx, np.zeros(600, int), y, 3, knn_opts(k=20, smooth="none"), segments=5)
    assert s["macro_f1"] == 1.0 and s["accuracy"] == 1.0
    noise = rng.standard_normal((600, 16))
    s = knn_quality(noise, idx, np.zeros(600, int), y, 3, knn_opts(k=20, smooth="none"), segments=5)
    assert s["macro_f1"] < 0.55


def test_knn_quality_is_classify_on_segments(tmp_path):
    """The monitor's k-NN is classify's: same pooled macro F1 and accuracy on the same embeddings."""
    from selfee.analysis.classify import classify

    rng = np.random.default_rng(1)
    y = bouts(rng, 500, 3)
    x = np.eye(3)[y] + 0.9 * rng.standard_normal((500, 3))
    write_embed(tmp_path / "emb", "v", x)
    labels = tmp_path / "labels"
    labels.mkdir()
    with open(labels / "v.csv", "w") as fh:
        fh.write("frame,label\n" + "".join(f"{i},s{c}\n" for i, c in enumerate(y)))
    opts = knn_opts(k=30)
    ref = classify(tmp_path / "emb", labels, tmp_path / "cls", opts, segments=5).pooled
    got = knn_quality(x.astype(np.float32), np.arange(500), np.zeros(500, int), y, 3, opts, segments=5)
    assert got["macro_f1"] == pytest.approx(ref["macro_f1"]) and got["accuracy"] == pytest.approx(ref["accuracy"])


def test_knn_opts_windows_follow_the_stride():
    o = knn_opts(4)
    assert o.smooth_window == 5 and o.feature_window == 5 and o.k == 200 and o.tau == 0.07


# ---------------------------------------------------------------------------------------------
# A learnable task: a moving or still disc, states independent of the disc's brightness
# ---------------------------------------------------------------------------------------------


def _task_video(tmp_path, n=360, seed=0):
    """Two states: 'still' (the disc rests) and 'run' (it moves fast); each bout has a random floor
    brightness and disc brightness, which an untrained network's features follow."""
    rng = np.random.default_rng(seed)
    y = bouts(rng, n, 2, mean_len=30)
    yy, xx = np.mgrid[0:48, 0:48]
    frames = np.empty((n, 48, 48, 3), np.uint8)
    x0 = y0 = 24.0
    floor = disc = 0
    for i in range(n):
        if i == 0 or y[i] != y[i - 1]:
            floor, disc = rng.uniform(40, 200), rng.uniform(0, 255)
            x0, y0 = rng.uniform(10, 38, 2)
            vx, vy = rng.choice([-1, 1], 2) * 3.0
        if y[i] == 1:
            x0, y0 = x0 + vx, y0 + vy
            if not 8 < x0 < 40:
                vx, x0 = -vx, np.clip(x0, 8, 40)
            if not 8 < y0 < 40:
                vy, y0 = -vy, np.clip(y0, 8, 40)
        img = np.full((48, 48), floor)
        img[(xx - x0) ** 2 + (yy - y0) ** 2 <= 36] = disc
        frames[i] = img.astype(np.uint8)[..., None]
    video = write_video(tmp_path / "task.mp4", frames, crf=10)
    labels = tmp_path / "labels"
    labels.mkdir()
    with open(labels / "task.csv", "w") as fh:
        fh.write("frame,label\n" + "".join(f"{i},{('still', 'run')[c]}\n" for i, c in enumerate(y)))
    return video, labels


def _read_metrics(run):
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_monitor_logs_quality_while_training(tmp_path, tiny_cfg, monkeypatch):
    from selfee.analysis.evaluate import PixelEmbedder
    from selfee.checkpoint import load_model
    from selfee.train import run_training

    video, labels = _task_video(tmp_path)
    cfg = tiny_cfg("data.frame_interval=2", optim__steps=12, optim__batch_size=8, train__knn_every=4,
                   train__checkpoint_every=12, train__log_every=3, train__embed_bn_frames=64, train__knn_segments=4)
    calls = []
    monkeypatch.setattr(PixelEmbedder, "__call__", lambda self, f, _c=PixelEmbedder.__call__: calls.append(1) or _c(self, f))
    run = tmp_path / "run"
    run_training(cfg, [video], run, show_progress=False, eval_videos=[video], eval_labels=labels)

    rows = _read_metrics(run)
    assert set(FIELDS) <= set(rows[0])
    knn = [r for r in rows if r["knn_f1"]]
    assert [int(r["step"]) for r in knn] == [0, 4, 8, 12]
    assert len(calls) == 1  # the baselines are computed once, at the start ...
    for key in ("knn_f1_untrained", "knn_f1_pixels", "knn_acc_untrained", "knn_acc_pixels"):
        assert len({r[key] for r in knn}) == 1  # ... and logged beside every evaluation
    assert all(not r["knn_f1"] for r in rows if r not in knn)
    f1 = [float(r["knn_f1"]) for r in knn]
    assert f1[0] == pytest.approx(float(knn[0]["knn_f1_untrained"]))  # step 0: the untrained encoder itself
    assert (run / "quality.png").stat().st_size > 0

    # the logged value is the k-NN of the checkpoint's own embedding (weights and embedding BatchNorm)
    model, _ = load_model(run / "last.pt")
    mon = QualityMonitor(load_eval_set([video], labels, cfg, cfg.train.knn_frames), 4, segments=4)
    x = embed_frames(model.encoder.to(memory_format=torch.channels_last), mon.data.frames)
    assert mon.score(x)["macro_f1"] == pytest.approx(f1[-1], abs=1e-6)
