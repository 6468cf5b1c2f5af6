"""A video's output files: streamed .npy rows, the .csv index text, window pooling, the completion check."""

import numpy as np
import pytest

from selfee.embed import NpyStreamWriter, VideoOutputs, WindowPool, completed, format_index


def test_npy_stream_writer(tmp_path):
    w = NpyStreamWriter(tmp_path / "a.npy", 3, "float16")
    w.write(np.ones((2, 3)))
    w.write(np.arange(3)[None])
    assert not (tmp_path / "a.npy").exists() and (tmp_path / "a.npy.partial").exists()
    w.commit()
    x = np.load(tmp_path / "a.npy")
    assert x.dtype == np.float16 and x.shape == (3, 3) and x[2].tolist() == [0, 1, 2]
    w = NpyStreamWriter(tmp_path / "b.npy", 3)
    w.write(np.ones((1, 3)))
    w.abort()
    assert list(tmp_path.iterdir()) == [tmp_path / "a.npy"]


def test_window_pool_streams_across_batches():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((23, 3)).astype(np.float32)
    pool = WindowPool(5)
    got = np.concatenate([pool.add(x[i : i + 3]) for i in range(0, 23, 3)])
    np.testing.assert_allclose(got, x[:20].reshape(4, 5, 3).mean(1), rtol=1e-6)
    assert len(pool.rest) == 3  # the incomplete last window is dropped


def test_rows_go_to_disk_as_they_come(tmp_path):
    """Nothing accumulates in memory: the .partial files grow while the video is embedded."""
    out = VideoOutputs(tmp_path, "v", "float32", window=0)
    for i in range(50):
        frames = np.arange(i * 100, (i + 1) * 100)
        out.write(frames, frames / 30.0, np.ones((100, 64), np.float32))
    out.csv.file.flush()
    assert (tmp_path / "v.npy.partial").stat().st_size >= 5000 * 64 * 4
    assert (tmp_path / "v.csv.partial").stat().st_size > 5000 * 8
    assert not (tmp_path / "v.npy").exists()
    record = out.commit({"key": "k"})
    assert record["frames"] == 5000 and completed(tmp_path, "v", "k") is not None
    assert np.load(tmp_path / "v.npy", mmap_mode="r").shape == (5000, 64)


def _index_reference(frames: np.ndarray, times: np.ndarray) -> str:
    return "".join(f"{f},{t:.6f}\n" for f, t in zip(frames.tolist(), times.tolist()))


@pytest.mark.parametrize("times", [
    "fps 20", "fps 29.97", "fps 30000/1001", "fps 59.94", "fps 128 (exact ties)", "pts/90000", "half microseconds",
    "random", "ten hours", "huge",
])
def test_csv_index_block_is_the_per_row_format_exactly(times):
    rng = np.random.default_rng(len(times))
    frames = np.arange(5000, dtype=np.int64) + (10**9 if times == "huge" else 0)
    t = {
        "fps 20": frames / 20, "fps 29.97": frames / 29.97, "fps 30000/1001": frames * 1001 / 30000,
        "fps 59.94": frames / 59.94, "fps 128 (exact ties)": frames / 128.0,  # 1/128 = 0.0078125: half to even
        "pts/90000": np.cumsum(rng.integers(2900, 3100, 5000)) / 90000, "half microseconds": (frames + 0.5) / 1e6,
        "random": rng.random(5000) * 3600, "ten hours": 36000 + rng.random(5000), "huge": rng.random(5000) * 3.9e9,
    }[times]
    assert format_index(frames, t) == _index_reference(frames, t)


def test_csv_index_edge_cases():
    cases = [
        (np.array([0, 9, 10, 99, 100, 10**12]), np.array([0, 5e-7, 1.5e-6, 0.9999995, 9.9999995, 1e-7])),
        (np.array([0, 1, 2]), np.array([0.0, -0.0, 1.0])),  # -0.0 prints as -0.000000: the per-row path
        (np.array([0, 1]), np.array([np.nan, -1.25])),
        (np.array([], np.int64), np.array([])),
        (np.arange(3, dtype=np.uint32), np.array([4.1e9, 1.0, 2.0])),
    ]
    for frames, times in cases:
        assert format_index(frames, times) == _index_reference(frames, times)
