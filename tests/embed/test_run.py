"""Embedding videos into files: one row per decoded frame, the same numbers as the eager encoder, window pooling,
float16, bad and truncated videos among good ones, memory bounded, arena correction; how an Embedder is given."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import numbered_frames, write_video
from selfee.cli import app
from selfee.data import make_sources
from selfee.embed import HostEmbedder, TorchEmbedder, embed_video, embed_videos, iter_embed_batches
from selfee.errors import SelfeeError
from selfee.export.open import open_embedder
from selfee.video import probe

from .conftest import CFG, decoded_count, reference


def test_embed_videos_outputs_and_bad_inputs(tmp_path, tiny):
    path, model = tiny
    good = write_video(tmp_path / "good.mp4", numbered_frames(30), g=8)
    short = write_video(tmp_path / "short.mp4", numbered_frames(3))
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    out = tmp_path / "emb"
    manifest = embed_videos([good, short, junk], path, out, batch_size=8, device="cpu", open_embedder=open_embedder)
    x = np.load(out / "good.npy")
    rows = np.loadtxt(out / "good.csv", delimiter=",", skiprows=1)
    assert x.shape == (30, 16) and x.dtype == np.float32
    assert rows[:, 0].tolist() == list(range(30))
    assert {f["video"].split("/")[-1] for f in manifest["failed"]} == {"short.mp4", "junk.mp4"}
    assert json.loads((out / "manifest.json").read_text())["videos"][0]["frames"] == 30
    assert not list(out.glob("*.partial"))
    np.testing.assert_allclose(x, reference(model, good), rtol=1e-4, atol=1e-4)


def test_stem_collisions_are_refused(tmp_path, tiny):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    a = write_video(tmp_path / "d1" / "same.mp4", numbered_frames(8))
    b = write_video(tmp_path / "d2" / "same.mp4", numbered_frames(8))
    with pytest.raises(SelfeeError, match="would both write 'same.npy'"):
        embed_videos([a, b], tiny[0], tmp_path / "out", open_embedder=open_embedder)


def test_the_embedder_is_given_or_opened_on_the_ranks_device(tiny, clip, tmp_path):
    """An opener is called with the weights, the backend (``cfg.embed.backend`` where a cfg is given, else auto),
    this rank's device and the first video (to verify a new cached export on); overrides apply on top of the
    config it returns. An Embedder given directly needs its cfg; with neither, nothing is embedded."""
    path, model = tiny
    calls = []

    def opener(weights, backend, device, videos):
        calls.append((weights, backend, device, [v.name for v in videos]))
        return TorchEmbedder(model.encoder, device), CFG

    m = embed_videos([clip], path, tmp_path / "a", device="cpu", overrides=["embed.dtype=float16"], batch_size=8,
                     open_embedder=opener, show_progress=False)
    assert calls == [(path, "auto", "cpu", ["clip.mp4"])]
    assert m["dtype"] == "float16" and np.load(tmp_path / "a" / "clip.npy").dtype == np.float16
    embed_videos([clip], path, tmp_path / "b", cfg=CFG.replace(**{"embed.backend": "torchscript"}), device="cpu",
                 batch_size=8, open_embedder=opener, show_progress=False)
    assert calls[-1][1] == "torchscript"
    with pytest.raises(SelfeeError, match="needs its cfg"):
        embed_videos([clip], path, tmp_path / "c", embedder=TorchEmbedder(model.encoder, "cpu"))
    with pytest.raises(SelfeeError, match="needs an embedder"):
        embed_videos([clip], path, tmp_path / "c")
    assert not (tmp_path / "c").exists()


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


class _Wide(HostEmbedder):
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

    from selfee.embed import source

    monkeypatch.setattr(source, "DECODE_BLOCK", 16)  # so that 60 frames already run the pipeline at its steady state
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
            record = embed_video(src, CFG, _Wide(), tmp_path / f"out{n}", 8, on_batch=sample)
        finally:
            tracemalloc.stop()
        assert record["frames"] == n and len(tensors) >= 7
        peaks[n] = (max(tensors), max(python))
    (t60, p60), (t600, p600) = peaks[60], peaks[600]
    frame_bytes = 3 * 32 * 48  # one live frame; 600 of them would be 2.8 MB, their rows 4.9 MB
    assert t600 <= 1.5 * t60 + 16 * frame_bytes, peaks
    assert p600 <= 1.5 * p60 + 64 * 1024, peaks


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
