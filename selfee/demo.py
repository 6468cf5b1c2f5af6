"""``selfee-fast demo``: the whole job on a small generated behaviour video with known labels.

One animal switches between bouts of resting, running, spinning on the spot and fluttering its
wings (:mod:`selfee.demo_video`); where it is, which way it faces, its size and the lighting change
at every bout, independently of the state. The demo trains a small backbone briefly with the
quality monitor on (:mod:`selfee.monitor`), embeds every frame with the trained weights, and
reports how well a k-NN (``classify``'s classifier, leave one segment out) recovers the states,
next to the same architecture untrained and to raw pixels.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from selfee.demo_video import STATES, synthetic_behaviour

log = logging.getLogger("selfee")

SEGMENTS = 5  # leave-one-segment-out k-NN over the one video
STEPS = 300


def write_demo_video(path: Path, n_frames: int = 1500, seed: int = 0, fps: int = 25) -> np.ndarray:
    """Encode the synthetic video as H.264; returns its labels."""
    from selfee.video import VideoWriter

    frames, labels = synthetic_behaviour(n_frames, seed=seed)
    with VideoWriter(path, fps, crf=18, gop=50) as out:
        out.write_many(frames)
    return labels


# ---------------------------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------------------------

# The demo's recipe on top of the tiny preset: strong brightness/contrast jitter and any rotation, the
# invariances the video's nuisances call for; every frame is embedded for the monitor (stride 1).
DEMO_OVERRIDES = (
    "optim.batch_size=32",
    "optim.base_lr=0.3",
    "data.frame_interval=2",
    "data.inner_shuffle=false",
    "data.holdout_fraction=0",
    "data.pool_batches=8",
    "data.chunk_fraction=1.0",
    "augment.rotation_deg=180",
    "augment.brightness=0.5",
    "augment.contrast=0.5",
    "train.pipeline=torch",
    "train.log_every=20",
    "train.eval_every=0",
    "train.tensorboard=false",
    "train.embed_bn_frames=1024",
    "train.knn_every=100",
    "train.knn_frames=100000",
    f"train.knn_segments={SEGMENTS}",
    "embed.batch_size=128",
)


def demo_config(steps: int, device: str, seed: int = 0):
    from selfee.config import SelfeeConfig

    return SelfeeConfig.load(preset="tiny", overrides=[
        *DEMO_OVERRIDES, f"optim.steps={steps}", f"train.device={device}", f"train.checkpoint_every={steps}",
        f"train.seed={seed}",
    ])


def run_demo(out: str | Path = "selfee-demo", steps: int | None = None, device: str = "auto", frames: int = 1500,
             seed: int = 0) -> dict:
    """Generate, train (with the quality monitor), embed, evaluate; print a short report and save ``demo.json``."""
    from selfee.embed import embed_videos
    from selfee.export.open import open_embedder
    from selfee.monitor import QualityMonitor
    from selfee.train import run_training

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = steps or STEPS
    t0 = time.perf_counter()
    video = out / "demo_behaviour.mp4"
    labels = write_demo_video(video, n_frames=frames, seed=seed)
    labels_dir = out / "labels"
    labels_dir.mkdir(exist_ok=True)
    with open(labels_dir / f"{video.stem}.csv", "w") as fh:
        fh.write("frame,label\n" + "".join(f"{i},{STATES[c]}\n" for i, c in enumerate(labels)))
    log.info("demo video: %s (%d frames, states: %s)", video, len(labels), ", ".join(STATES))
    cfg = demo_config(steps, device, seed)
    t_video = time.perf_counter()

    run = out / "run"
    monitor = QualityMonitor.open(cfg, [video], labels_dir)
    summary = run_training(cfg, [video], run, monitor=monitor)
    t_train = time.perf_counter()

    emb_dir = out / "embed_trained"
    embed_videos([video], run / "last.pt", emb_dir, device=device, open_embedder=open_embedder)
    x = np.load(emb_dir / f"{video.stem}.npy")
    rows = np.loadtxt(emb_dir / f"{video.stem}.csv", delimiter=",", skiprows=1)[:, 0].astype(int)
    if len(x) != len(labels) or not (rows == np.arange(len(labels))).all():
        raise RuntimeError(f"embedding rows ({len(x)}) do not match the video's frames ({len(labels)})")
    trained = monitor.score(x)
    base = monitor.baselines
    scores = {
        "trained": trained,
        "untrained": {"macro_f1": base["knn_f1_untrained"], "accuracy": base["knn_acc_untrained"]},
        "pixels": {"macro_f1": base["knn_f1_pixels"], "accuracy": base["knn_acc_pixels"]},
    }
    elapsed = time.perf_counter() - t0
    report = {
        "video": str(video),
        "frames": int(len(labels)),
        "states": list(STATES),
        "seed": seed,
        "steps": steps,
        "classifier": f"classify's weighted k-NN (k={monitor.opts.k}, tau={monitor.opts.tau}), "
                      f"leave one of {SEGMENTS} segments out",
        "seconds": {"video": t_video - t0, "train": t_train - t_video, "embed_and_score": elapsed - (t_train - t0),
                    "total": elapsed},
        "final_loss": summary.get("loss"),
        "quality_curve": [{"step": r["step"], "macro_f1": r["knn_f1"], "accuracy": r["knn_acc"]}
                          for r in monitor.history],
        "knn": scores,
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2))
    print()
    print(f"Selfee demo (seed {seed}): {len(labels)} frames, {steps} training steps, {elapsed:.0f} s in all")
    print(f"k-NN recovery of {len(STATES)} behaviours ({', '.join(STATES)}), leave one of {SEGMENTS} segments out:")
    print(f"  {'features':<10} {'accuracy':>9} {'macro F1':>9}")
    for name, sc in scores.items():
        print(f"  {name:<10} {sc['accuracy']:>9.3f} {sc['macro_f1']:>9.3f}")
    print(f"outputs: {out} (video, labels/, run/ with quality.png, embed_trained/, demo.json)")
    return report
