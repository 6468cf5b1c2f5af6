"""Centred sliding windows over frames: mean, mean + std features, and the mode of labels.

Windows have an odd width ``w`` and are truncated at the ends of a sequence (the statistics use
the frames that exist), as in the original Selfee classification scripts. Everything is computed
with cumulative sums in row blocks, so the cost is linear in the number of frames and the
temporaries stay ``block x dim``.
"""

from __future__ import annotations

import numpy as np

from selfee.errors import SelfeeError

FEATURES = ("frame", "mean", "mean_std")


def check_window(w: int, what: str = "window") -> int:
    if w < 1 or w % 2 == 0:
        raise SelfeeError(f"{what} must be an odd number of frames >= 1 (got {w})")
    return int(w)


def _window_sums(x: np.ndarray, w: int, block: int, squares: bool):
    """Yield (rows slice, count, sum, sum of squares or None) per row block; float64."""
    n = len(x)
    h = w // 2
    for a in range(0, n, block):
        b = min(n, a + block)
        lo, hi = max(0, a - h), min(n, b + h)
        seg = np.asarray(x[lo:hi], dtype=np.float64)
        c = np.concatenate([np.zeros((1, seg.shape[1])), np.cumsum(seg, axis=0)])
        c2 = np.concatenate([np.zeros((1, seg.shape[1])), np.cumsum(seg * seg, axis=0)]) if squares else None
        i = np.arange(a, b)
        start = np.maximum(i - h, 0) - lo
        stop = np.minimum(i + h + 1, n) - lo
        cnt = (stop - start)[:, None].astype(np.float64)
        yield slice(a, b), cnt, c[stop] - c[start], (c2[stop] - c2[start]) if squares else None


def window_mean(x: np.ndarray, w: int, block: int = 16384, out: np.ndarray | None = None) -> np.ndarray:
    """Centred moving average of rows (float32, same shape; written into ``out`` when given)."""
    check_window(w)
    out = np.empty(x.shape, np.float32) if out is None else out
    for rows, cnt, s, _ in _window_sums(x, w, block, squares=False):
        out[rows] = s / cnt
    return out


def window_mean_std(x: np.ndarray, w: int, block: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Centred moving average and (population) standard deviation of rows, float32."""
    check_window(w)
    mean = np.empty(x.shape, np.float32)
    std = np.empty(x.shape, np.float32)
    for rows, m, sd in _mean_std_blocks(x, w, block):
        mean[rows], std[rows] = m, sd
    return mean, std


def _mean_std_blocks(x: np.ndarray, w: int, block: int):
    for rows, cnt, s, s2 in _window_sums(x, w, block, squares=True):
        m = s / cnt
        yield rows, m, np.sqrt(np.maximum(s2 / cnt - m * m, 0.0))


def feature_dim(kind: str, dim: int) -> int:
    """Width of :func:`temporal_features` for embeddings of width ``dim``."""
    if kind not in FEATURES:
        raise SelfeeError(f"unknown feature kind '{kind}' (choose from: {', '.join(FEATURES)})")
    return 3 * dim if kind == "mean_std" else dim


def _unit_rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def temporal_features(x: np.ndarray, kind: str, w: int, out: np.ndarray | None = None,
                      block: int = 16384) -> np.ndarray:
    """Per-frame features for k-NN: ``frame`` (as is), ``mean`` (window mean), or ``mean_std``.

    ``mean_std`` concatenates [frame, window mean, window std], each part L2-normalized so that
    the three count equally in a cosine similarity (the original concatenated raw, mean and std).
    ``out`` (n x :func:`feature_dim`) may be a memory map, for inputs larger than memory.
    """
    d = feature_dim(kind, x.shape[1])
    out = np.empty((len(x), d), np.float32) if out is None else out
    if kind == "frame":
        for a in range(0, len(x), block):
            out[a : a + block] = x[a : a + block]
    elif kind == "mean":
        window_mean(x, check_window(w), block, out=out)
    else:
        check_window(w)
        dim = x.shape[1]
        for rows, m, sd in _mean_std_blocks(x, w, block):
            out[rows, :dim] = _unit_rows(x[rows])
            out[rows, dim : 2 * dim] = _unit_rows(m)
            out[rows, 2 * dim :] = _unit_rows(sd)
    return out


def sliding_mode(labels: np.ndarray, w: int, n_classes: int | None = None) -> np.ndarray:
    """Most frequent integer label in a centred window of each frame (ties: the smallest label)."""
    check_window(w)
    labels = np.asarray(labels, dtype=np.int64)
    if w == 1 or len(labels) == 0:
        return labels.copy()
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    n = len(labels)
    h = w // 2
    onehot = np.zeros((n + 1, n_classes), np.int32)
    onehot[np.arange(1, n + 1), labels] = 1
    c = np.cumsum(onehot, axis=0)
    i = np.arange(n)
    counts = c[np.minimum(i + h + 1, n)] - c[np.maximum(i - h, 0)]
    return counts.argmax(axis=1)  # argmax returns the first maximum: the smallest label on ties


def window_average_scores(scores: np.ndarray, w: int) -> np.ndarray:
    """Centred moving average of per-frame class scores (the original's 'Aver' aggregation)."""
    return window_mean(scores, w).astype(np.float64)
