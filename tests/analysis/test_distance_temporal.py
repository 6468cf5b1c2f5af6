"""Chunked cosine search and sliding windows against direct NumPy references."""

from __future__ import annotations

import numpy as np
import pytest

from selfee.analysis.distance import BlockStats, cosine_topk, min_cosine_distance
from selfee.analysis.temporal import sliding_mode, temporal_features, window_mean, window_mean_std


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_topk_chunked_equals_full_matrix(rng):
    q = rng.standard_normal((37, 6))
    r1, r2 = rng.standard_normal((50, 6)), rng.standard_normal((23, 6)).astype(np.float16)
    full = unit(q) @ unit(np.concatenate([r1, r2.astype(np.float64)])).T
    want_i = np.argsort(-full, axis=1)[:, :5]
    stats = BlockStats()
    s, i = cosine_topk(q, [r1, r2], 5, block_elems=7 * 11, query_rows=7, stats=stats)
    assert stats.peak_block_elems <= 7 * 11 and stats.blocks > 20
    assert np.array_equal(i.numpy(), want_i)
    np.testing.assert_allclose(s.numpy(), np.take_along_axis(full, want_i, 1), atol=1e-5)
    s1, i1 = cosine_topk(q, [r1, r2], 5)  # one block
    assert np.array_equal(i1.numpy(), i.numpy())


def test_self_distance_excludes_the_window(rng):
    x = rng.standard_normal((40, 5))
    frames = np.arange(100, 140)
    got = min_cosine_distance(x, x, exclude_radius=3, query_pos=frames, ref_pos=frames, block_elems=64)
    d = 1 - unit(x) @ unit(x).T
    far = np.abs(np.arange(40)[:, None] - np.arange(40)[None, :]) > 3
    np.testing.assert_allclose(got, np.where(far, d, np.inf).min(1), atol=1e-5)
    everything = min_cosine_distance(x[:5], x[:5], exclude_radius=10, query_pos=frames[:5], ref_pos=frames[:5])
    assert np.isinf(everything).all()


def test_window_mean_std_match_direct_windows(rng):
    x = rng.standard_normal((23, 4))
    m, s = window_mean_std(x, 5, block=6)
    for i in range(23):
        seg = x[max(0, i - 2) : i + 3]
        np.testing.assert_allclose(m[i], seg.mean(0), atol=1e-5)
        np.testing.assert_allclose(s[i], seg.std(0), atol=1e-5)
    np.testing.assert_allclose(window_mean(x, 5, block=4), m, atol=1e-6)
    f = temporal_features(x, "mean_std", 5, block=7)
    assert f.shape == (23, 12)
    np.testing.assert_allclose(f[:, 4:8], unit(m), atol=1e-5)


def test_sliding_mode_ties_go_to_the_smallest_label():
    y = np.array([2, 2, 1, 1, 0, 0, 0, 2, 1])
    got = sliding_mode(y, 3)
    want = []
    for i in range(len(y)):
        seg = y[max(0, i - 1) : i + 2]
        c = np.bincount(seg, minlength=3)
        want.append(int(np.flatnonzero(c == c.max())[0]))
    assert got.tolist() == want
    assert sliding_mode(y, 1).tolist() == y.tolist()


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 2 x 10^10 similarities: ~2 min on 2 idle cores, much longer on a loaded one
def test_anomaly_scores_on_1e5_by_1e5_frames_in_bounded_memory(rng):
    """10^5 query x 10^5 reference frames: a full distance matrix would need 40 GB; we stay under 300 MB."""
    import threading

    from selfee.analysis.anomaly import AnomalyOptions, score_video

    n, d = 100_000, 4
    ref = rng.standard_normal((n, d)).astype(np.float32)
    q = rng.standard_normal((n, d)).astype(np.float32)
    opts = AnomalyOptions(window=50, block_elems=1 << 22)
    stats = BlockStats()
    base, peak, stop = _rss_bytes(), [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            stop.wait(0.01)

    t = threading.Thread(target=watch)
    t.start()
    try:
        d_ref, d_self = score_video(q, np.arange(n), [ref], opts, stats)
    finally:
        stop.set()
        t.join()
    assert stats.peak_block_elems <= 1 << 22
    assert peak[0] - base < 300 * 2**20, f"RSS grew by {(peak[0] - base) / 2**20:.0f} MiB"
    sample = rng.choice(n, 20, replace=False)
    uq, ur = unit(q[sample].astype(np.float64)), unit(ref.astype(np.float64))
    np.testing.assert_allclose(d_ref[sample], (1 - uq @ ur.T).min(1), atol=1e-5)
    own = 1 - uq @ unit(q.astype(np.float64)).T
    own[np.abs(sample[:, None] - np.arange(n)[None, :]) <= 50] = np.inf
    np.testing.assert_allclose(d_self[sample], own.min(1), atol=1e-5)


def test_anomaly_memory_stays_bounded_on_a_small_scale_copy(rng):
    """The same bound at 3000 frames with a small block: the block size, not n, sets the memory."""
    from selfee.analysis.anomaly import AnomalyOptions, score_video

    n = 3000
    q, ref = rng.standard_normal((n, 3)), rng.standard_normal((n, 3))
    stats = BlockStats()
    d_ref, d_self = score_video(q, np.arange(n), [ref], AnomalyOptions(window=5, block_elems=1 << 16), stats)
    assert stats.peak_block_elems <= 1 << 16 < n * n // 50
    sample = np.arange(0, n, 299)
    uq = unit(q[sample])
    np.testing.assert_allclose(d_ref[sample], (1 - uq @ unit(ref).T).min(1), atol=1e-5)
