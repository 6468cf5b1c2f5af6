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
    out.csv.flush()
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
