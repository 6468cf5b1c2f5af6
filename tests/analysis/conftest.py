"""Synthetic embedding directories with known structure for the analysis tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_embed(d: Path, stem: str, x: np.ndarray, frames: np.ndarray | None = None, fps: float = 30.0,
                dtype=np.float32) -> Path:
    """``<stem>.npy`` + ``<stem>.csv`` as `selfee-fast embed` writes them."""
    d.mkdir(parents=True, exist_ok=True)
    frames = np.arange(len(x)) if frames is None else np.asarray(frames)
    np.save(d / f"{stem}.npy", np.asarray(x, dtype=dtype))
    with open(d / f"{stem}.csv", "w") as fh:
        fh.write("frame,time_s\n")
        for f in frames:
            fh.write(f"{int(f)},{(f - frames[0]) / fps:.6f}\n")
    return d / f"{stem}.npy"


def cluster_sequence(rng, centers: np.ndarray, states: np.ndarray, noise: float = 0.05) -> np.ndarray:
    """Frames drawn around the centre of each frame's state."""
    return centers[states] + noise * rng.standard_normal((len(states), centers.shape[1]))


def bouts(rng, n: int, k: int, mean_len: int = 30) -> np.ndarray:
    """A state sequence of n frames made of bouts of random states (consecutive bouts differ)."""
    out, s = [], int(rng.integers(k))
    while sum(len(b) for b in out) < n:
        out.append(np.full(int(rng.integers(mean_len // 2, mean_len * 3 // 2 + 1)), s))
        s = (s + 1 + int(rng.integers(k - 1))) % k
    return np.concatenate(out)[:n]


@pytest.fixture
def rng():
    return np.random.default_rng(0)
