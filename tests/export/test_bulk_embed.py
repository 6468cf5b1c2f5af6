"""Bulk embedding: every CPU backend gives the same embeddings, one row per decoded frame; window
pooling; float16; streaming outputs; bad and truncated videos among good ones."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import numbered_frames, write_video
from selfee.cli import app
from selfee.data import make_sources
from selfee.embed import VideoOutputs, WindowPool, completed, embed_videos, iter_embed_batches
from selfee.video import probe

from .conftest import CFG, cosine_min, decoded_count


def reference(model, video) -> np.ndarray:
    """The eager encoder on the reference live frames: what every backend must reproduce."""
    (src,) = make_sources([probe(video)], CFG)
    live = torch.cat([b.frames for b in iter_embed_batches(src, CFG, 64)])
    with torch.no_grad():
        return model.encoder(live.float() / 255).numpy()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    return write_video(d / "clip.mp4", numbered_frames(37), fps=20, g=8, bf=2)


@pytest.mark.parametrize("backend", ["torch", "torchscript", "onnx", "auto"])
def test_every_cpu_backend_gives_the_same_embeddings_one_row_per_frame(tiny, exports, clip, tmp_path, backend):
    path, model = tiny
    weights = {"torchscript": exports["torchscript"], "onnx": exports["onnx"]}.get(backend, path)
    out = tmp_path / "emb"
    manifest = embed_videos([clip], weights, out, backend=None if backend == "auto" else backend, batch_size=8,
                            device="cpu", overrides=["embed.pipeline=torch"])
    x = np.load(out / "clip.npy")
    n = decoded_count(clip)
    assert x.shape == (n, 16) and x.dtype == np.float32  # exactly one row per decoded frame
    index = np.loadtxt(out / "clip.csv", delimiter=",", skiprows=1)
    assert index[:, 0].tolist() == list(range(n))
    np.testing.assert_allclose(index[:, 1], np.arange(n) / 20, atol=1e-6)
    assert cosine_min(x, reference(model, clip)) >= 0.9999
    # auto on the CPU runs a checkpoint through ONNX Runtime (the fastest CPU backend measured)
    assert manifest["backend"] == ("onnx" if backend == "auto" else backend)
    assert manifest["videos"][0]["frames"] == n and manifest["videos"][0]["fps"] > 0
    assert len(manifest["weights_sha256"]) == 64 and "torch" in manifest["versions"]
    assert not list(out.glob("*.partial"))


def test_window_pooling_matches_the_originals_avgpool(tiny, clip, tmp_path):
    out = tmp_path / "emb"
    r = CliRunner().invoke(app, ["embed", str(clip), "--weights", str(tiny[0]), "--out", str(out), "--window", "4",
                                 "--dtype", "float16", "--backend", "torch", "--batch-size", "5", "--device", "cpu",
                                 "-s", "embed.pipeline=torch"])
    assert r.exit_code == 0, r.output
    x = np.load(out / "clip.npy")
    pooled = np.load(out / "clip.window4.npy")
    assert x.dtype == pooled.dtype == np.float16 and x.shape == (37, 16)
    # nn.AvgPool1d(4, stride=4) over the frame axis, as the original's ConvModelInfer
    ref = torch.nn.AvgPool1d(4, stride=4)(torch.from_numpy(reference(tiny[1], clip)).t()[None])[0].t().numpy()
    assert pooled.shape == (9, 16)
    np.testing.assert_allclose(pooled.astype(np.float32), ref, rtol=2e-3, atol=2e-3)
    # the analysis readers take <stem>.npy + <stem>.csv pairs only: the pooled file has no .csv
    assert not (out / "clip.window4.csv").exists()
    assert json.loads((out / "manifest.json").read_text())["window"] == 4


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


def test_bad_and_truncated_videos_are_reported_and_the_rest_embedded(tiny, tmp_path):
    good = write_video(tmp_path / "good.mp4", numbered_frames(30), g=8)
    # an MPEG-TS cut in the middle: the header is fine, the stream ends early
    whole = write_video(tmp_path / "whole.ts", numbered_frames(60), g=8)
    cut = tmp_path / "cut.ts"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    whole.unlink()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = tmp_path / "emb"
    r = CliRunner().invoke(app, ["embed", str(good), str(cut), str(junk), str(empty), "--weights", str(tiny[0]),
                                 "--out", str(out), "--backend", "torch", "--batch-size", "8", "--device", "cpu",
                                 "-s", "embed.pipeline=torch"])
    assert r.exit_code == 3, r.output  # some inputs failed, the others were processed
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f["video"].rsplit("/", 1)[-1] for f in manifest["failed"]} == {"junk.mp4", "empty.mp4"}
    assert np.load(out / "good.npy").shape == (30, 16)
    n_cut = decoded_count(cut)
    assert 0 < n_cut < 60
    assert np.load(out / "cut.npy").shape == (n_cut, 16)  # what the decoder could read, one row each
    assert len(np.loadtxt(out / "cut.csv", delimiter=",", skiprows=1)) == n_cut
    assert not (out / "junk.npy").exists() and not list(out.glob("*.partial"))


class _Wide:
    """A stand-in embedder with wide rows (2048-d, as the full model), so that rows kept in memory would show."""

    name = "wide"
    dim = 2048

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        return np.zeros((len(frames), self.dim), np.float32)


def _tensor_bytes() -> int:
    """Bytes of the storages of every torch tensor alive in Python (a census through the garbage collector)."""
    import gc
    import warnings

    seen, total = set(), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance() on deprecated torch aliases warns
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor):
                storage = obj.untyped_storage()
                if storage.data_ptr() not in seen:
                    seen.add(storage.data_ptr())
                    total += storage.nbytes()
    return total


def test_memory_does_not_grow_with_video_length(tmp_path, monkeypatch):
    """Peak memory while embedding a 600-frame video is that of a 60-frame one: torch buffers (decoded frames,
    live frames, batches in flight; a census of live tensors) and Python-side buffers (NumPy decode blocks,
    rows, CSV text; tracemalloc's peak) stay bounded by the block and batch sizes."""
    import tracemalloc

    import selfee.embed as E

    monkeypatch.setattr(E, "DECODE_BLOCK", 16)  # so that 60 frames already run the pipeline at its steady state
    peaks = {}
    for n, every in ((60, 1), (600, 8)):  # the census is slow: the long video is sampled every 8th batch
        video = write_video(tmp_path / f"v{n}.mp4", numbered_frames(n), g=8)
        (src,) = make_sources([probe(video)], CFG)
        base = _tensor_bytes()
        tensors, python, batches = [], [], [0]

        def sample(rows, every=every, base=base, tensors=tensors, python=python, batches=batches):
            batches[0] += 1
            if batches[0] % every == 0:
                python.append(tracemalloc.get_traced_memory()[1])  # the peak since the last sample
                tensors.append(_tensor_bytes() - base)
                tracemalloc.reset_peak()  # the census's own list does not count

        (tmp_path / f"out{n}").mkdir()
        tracemalloc.start()
        try:
            record = E.embed_video(src, CFG, _Wide(), tmp_path / f"out{n}", 8, on_batch=sample)
        finally:
            tracemalloc.stop()
        assert record["frames"] == n and len(tensors) >= 7
        peaks[n] = (max(tensors), max(python))
    (t60, p60), (t600, p600) = peaks[60], peaks[600]
    frame_bytes = 3 * 32 * 48  # one live frame; 600 of them would be 2.8 MB, their rows 4.9 MB
    assert t600 <= 1.5 * t60 + 16 * frame_bytes, peaks
    assert p600 <= 1.5 * p60 + 64 * 1024, peaks


def _index_reference(frames: np.ndarray, times: np.ndarray) -> str:
    return "".join(f"{f},{t:.6f}\n" for f, t in zip(frames.tolist(), times.tolist()))


@pytest.mark.parametrize("times", [
    "fps 20", "fps 29.97", "fps 30000/1001", "fps 59.94", "fps 128 (exact ties)", "pts/90000", "half microseconds",
    "random", "ten hours", "huge",
])
def test_csv_index_block_is_the_per_row_format_exactly(times):
    from selfee.embed import format_index

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
    from selfee.embed import format_index

    cases = [
        (np.array([0, 9, 10, 99, 100, 10**12]), np.array([0, 5e-7, 1.5e-6, 0.9999995, 9.9999995, 1e-7])),
        (np.array([0, 1, 2]), np.array([0.0, -0.0, 1.0])),  # -0.0 prints as -0.000000: the per-row path
        (np.array([0, 1]), np.array([np.nan, -1.25])),
        (np.array([], np.int64), np.array([])),
        (np.arange(3, dtype=np.uint32), np.array([4.1e9, 1.0, 2.0])),
    ]
    for frames, times in cases:
        assert format_index(frames, times) == _index_reference(frames, times)


def test_embed_with_arena_corners_warps_each_video_as_training_does(tiny, clip, tmp_path):
    """--corners/--arena on embed: the same per-video arena entries as train (selfee.video.arena.apply_corners); the
    embeddings are those of the warped live frames, one row per decoded frame, and the manifest keeps the arena."""
    from selfee.video.corners import apply_corners

    corners = "6,4 58,8 56,44 8,40"
    out = tmp_path / "emb"
    r = CliRunner().invoke(app, ["embed", str(clip), "--weights", str(tiny[0]), "--out", str(out), "--backend", "torch",
                                 "--batch-size", "8", "--device", "cpu", "-s", "embed.pipeline=torch",
                                 "--corners", corners, "--arena", "open_field"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["config"]["data"]["videos"]["clip.mp4"]
    assert entry["arena"] == "open_field" and entry["arena_corners"] == [[6, 4], [58, 8], [56, 44], [8, 40]]
    got = np.load(out / "clip.npy")
    assert got.shape == (decoded_count(clip), 16)

    warped_cfg = apply_corners(CFG, [clip], corners, "open_field")
    (src,) = make_sources([probe(clip)], warped_cfg)
    live = torch.cat([b.frames for b in iter_embed_batches(src, warped_cfg, 64)])
    with torch.no_grad():
        want = tiny[1].encoder(live.float() / 255).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    (plain,) = make_sources([probe(clip)], CFG)
    unwarped = torch.cat([b.frames for b in iter_embed_batches(plain, CFG, 64)])
    assert (live.float() - unwarped.float()).abs().mean() > 2  # the warp changed what was embedded
    assert not np.allclose(got, reference(tiny[1], clip), rtol=1e-4, atol=1e-5)
