"""``selfee-fast demo``: the whole job on a small generated behaviour video with known labels.

Two fly-like shapes in an arena: a "female" wandering, a "male" switching between bouts of
resting (still, apart), chasing (following her closely at speed) and wing extension (close to her,
still, one wing out and vibrating). The demo trains a small backbone briefly, embeds every
frame, and reports how well a k-NN on the embeddings recovers the bouts, next to the same
architecture untrained.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("selfee")

STATES = ("rest", "chase", "wing")


# ---------------------------------------------------------------------------------------------
# The synthetic video
# ---------------------------------------------------------------------------------------------


def _ellipse(yy, xx, cx, cy, a, b, theta):
    c, s = math.cos(theta), math.sin(theta)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def synthetic_behaviour(n_frames: int = 1500, size: int = 128, seed: int = 0):
    """Frames (T x size x size x 3 uint8) and per-frame state labels (T ints into STATES).

    What a state looks like does not depend on where the flies are: at rest both stand still;
    in a chase both run (the male close behind); in wing extension the male stands beside the
    female with one wing out, vibrating. Between states the male moves fast, so transitions
    are short.
    """
    rng = np.random.default_rng(seed)
    labels = np.empty(n_frames, np.int64)
    t, state = 0, 0
    while t < n_frames:  # bouts of 30-80 frames, never the same state twice in a row
        length = int(rng.integers(30, 81))
        labels[t : t + length] = state
        t += length
        state = int(rng.choice([s for s in range(len(STATES)) if s != state]))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    floor = rng.normal(40, 6, (size, size)).clip(0, 255).astype(np.float32)
    centre = size / 2
    arena = ((xx - centre) ** 2 + (yy - centre) ** 2) <= (0.47 * size) ** 2
    r_max = 0.36 * size
    fx, fy, fh = centre, centre, float(rng.uniform(0, 2 * math.pi))  # female position, heading
    mx, my, mh = size * 0.3, size * 0.3, 0.0  # male
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for i in range(n_frames):
        s = STATES[labels[i]]
        if s == "chase":  # the female runs, turning at the wall
            fh += rng.normal(0, 0.12)
            nx, ny = fx + 3.0 * math.cos(fh), fy + 3.0 * math.sin(fh)
            if math.hypot(nx - centre, ny - centre) > r_max:
                fh += math.pi / 2 + rng.normal(0, 0.3)
                nx, ny = fx, fy
            fx, fy = nx, ny
            tx, ty = fx - 0.17 * size * math.cos(fh), fy - 0.17 * size * math.sin(fh)
        elif s == "wing":  # beside her, facing her
            side = fh + math.pi / 2
            tx, ty = fx + 0.13 * size * math.cos(side), fy + 0.13 * size * math.sin(side)
        else:
            tx, ty = mx, my
        d = math.hypot(tx - mx, ty - my)
        if d > 0.5:
            mh = math.atan2(ty - my, tx - mx)
            step = min(4.0, d)
            mx, my = mx + step * (tx - mx) / d, my + step * (ty - my) / d
        elif s == "wing":
            mh = math.atan2(fy - my, fx - mx)
        img = floor.copy()
        img[~arena] = 10
        img[_ellipse(yy, xx, fx, fy, 0.075 * size, 0.035 * size, fh)] = 200
        img[_ellipse(yy, xx, mx, my, 0.065 * size, 0.03 * size, mh)] = 230
        if s == "wing" and d <= 0.5:  # one wing out, perpendicular, vibrating
            wa = mh + math.pi / 2 + 0.3 * math.sin(i * 2.1)
            wx, wy = mx + 0.06 * size * math.cos(wa), my + 0.06 * size * math.sin(wa)
            img[_ellipse(yy, xx, wx, wy, 0.06 * size, 0.014 * size, wa)] = 170
        img += rng.normal(0, 3, img.shape)
        frames[i] = np.repeat(img.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return frames, labels


def write_demo_video(path: Path, n_frames: int = 1500, size: int = 128, fps: int = 25, seed: int = 0) -> np.ndarray:
    """Encode the synthetic video as H.264; returns its labels."""
    from selfee.video import VideoWriter

    frames, labels = synthetic_behaviour(n_frames, size, seed)
    with VideoWriter(path, fps, crf=18, gop=50) as out:
        out.write_many(frames)
    return labels


# ---------------------------------------------------------------------------------------------
# k-NN recovery of the labels
# ---------------------------------------------------------------------------------------------


def knn_blocked_scores(x: np.ndarray, y: np.ndarray, k: int = 5, blocks: int = 10) -> dict:
    """Leave-one-block-out cosine k-NN over contiguous time blocks: accuracy and macro F1.

    Neighbouring frames are nearly identical, so the reference set never holds frames from the
    block being classified.
    """
    x = torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32), dim=1)
    y = torch.as_tensor(y)
    n = len(y)
    edges = np.linspace(0, n, blocks + 1).astype(int)
    pred = torch.empty_like(y)
    n_classes = int(y.max()) + 1
    for a, b in zip(edges[:-1], edges[1:]):
        ref = torch.cat([torch.arange(0, a), torch.arange(b, n)])
        sim = x[a:b] @ x[ref].T
        nn_idx = sim.topk(k, dim=1).indices
        votes = torch.nn.functional.one_hot(y[ref][nn_idx], n_classes).sum(1)
        pred[a:b] = votes.argmax(1)
    acc = float((pred == y).float().mean())
    f1s = []
    for c in range(n_classes):
        tp = float(((pred == c) & (y == c)).sum())
        fp = float(((pred == c) & (y != c)).sum())
        fn = float(((pred != c) & (y == c)).sum())
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    return {"accuracy": acc, "macro_f1": float(np.mean(f1s))}


# ---------------------------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------------------------


def demo_config(out: Path, steps: int, device: str):
    from selfee.config import SelfeeConfig

    return SelfeeConfig.load(
        preset="tiny",
        overrides=[
            f"optim.steps={steps}",
            "optim.batch_size=32",
            "optim.base_lr=0.3",
            "data.frame_interval=2",
            "data.inner_shuffle=false",
            "data.holdout_fraction=0",
            "data.pool_batches=8",
            "data.chunk_fraction=1.0",
            f"train.device={device}",
            "train.pipeline=torch",
            f"train.checkpoint_every={steps}",
            "train.log_every=20",
            "train.eval_every=0",
            "train.tensorboard=false",
            "train.embed_bn_frames=1024",
            "embed.batch_size=128",
        ],
    )


def run_demo(out: str | Path = "selfee-demo", steps: int | None = None, device: str = "auto", frames: int = 1500) -> dict:
    """Generate, train, embed, evaluate; print a short report and save ``demo.json``."""
    from selfee.checkpoint import checkpoint_dict
    from selfee.embed import embed_videos
    from selfee.export.open import open_embedder
    from selfee.fileio import atomic_save
    from selfee.model import Selfee
    from selfee.train import run_training

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = steps or 300
    t0 = time.perf_counter()
    video = out / "demo_behaviour.mp4"
    labels = write_demo_video(video, n_frames=frames)
    np.savetxt(out / "demo_behaviour.labels.csv", np.c_[np.arange(len(labels)), labels], fmt="%d",
               delimiter=",", header="frame,label", comments="")
    log.info("demo video: %s (%d frames, states: %s)", video, len(labels), ", ".join(STATES))
    cfg = demo_config(out, steps, device)

    run = out / "run"
    summary = run_training(cfg, [video], run)
    t_train = time.perf_counter()

    untrained = out / "untrained.pt"
    torch.manual_seed(cfg.train.seed + 1)
    model = Selfee(cfg.model)
    atomic_save(checkpoint_dict(model, cfg), untrained)

    scores = {}
    for name, weights in (("trained", run / "last.pt"), ("untrained", untrained)):
        emb_dir = out / f"embed_{name}"
        embed_videos([video], weights, emb_dir, device=device, open_embedder=open_embedder)
        x = np.load(emb_dir / f"{video.stem}.npy")
        frames = np.loadtxt(emb_dir / f"{video.stem}.csv", delimiter=",", skiprows=1)[:, 0].astype(int)
        if len(x) != len(labels) or not (frames == np.arange(len(labels))).all():
            raise RuntimeError(f"embedding rows ({len(x)}) do not match the video's frames ({len(labels)})")
        scores[name] = knn_blocked_scores(x, labels)
    elapsed = time.perf_counter() - t0
    report = {
        "video": str(video),
        "frames": int(len(labels)),
        "steps": steps,
        "train_seconds": t_train - t0,
        "total_seconds": elapsed,
        "final_loss": summary.get("loss"),
        "knn": scores,
    }
    (out / "demo.json").write_text(json.dumps(report, indent=2))
    print()
    print(f"Selfee demo: {len(labels)} frames, {steps} training steps, {elapsed:.0f} s in all")
    print(f"k-NN recovery of {len(STATES)} behaviours ({', '.join(STATES)}), leave-one-block-out, k=5:")
    print(f"  {'encoder':<10} {'accuracy':>9} {'macro F1':>9}")
    for name, s in scores.items():
        print(f"  {name:<10} {s['accuracy']:>9.3f} {s['macro_f1']:>9.3f}")
    print(f"outputs: {out} (video, run/, embed_trained/, embed_untrained/, demo.json)")
    return report
