"""Embedding: every decoded frame exactly once and in order, streamed atomic outputs, bad videos skipped."""

import json

import av
import numpy as np
import pytest
import torch

from conftest import numbered_frames, write_video
from selfee.augment import resize_uint8
from selfee.checkpoint import checkpoint_dict
from selfee.config import SelfeeConfig
from selfee.data import make_sources
from selfee.embed import NpyStreamWriter, embed_videos, iter_embed_batches
from selfee.errors import SelfeeError
from selfee.fileio import atomic_save
from selfee.live_frames import neighbor_indices
from selfee.model import Selfee
from selfee.video import frame_to_grey, probe

CFG = SelfeeConfig.load(
    preset="tiny", overrides=["data.input_size=[32, 48]", "data.frame_interval=2", "model.proj_dim=16",
                              "model.pred_hidden=8", "model.cld_dim=8"]
)


def decode_rgb(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = Selfee(CFG.model).eval()
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    atomic_save(checkpoint_dict(model, CFG), path)
    return path, model


@pytest.mark.parametrize("n, batch", [(53, 16), (7, 4), (5, 64)])
def test_every_frame_once_in_order_with_exact_live_frames(tmp_path, n, batch):
    p = write_video(tmp_path / "v.mp4", numbered_frames(n), fps=20, g=8, bf=2)
    with av.open(str(p)) as c:
        grey = np.stack([frame_to_grey(f) for f in c.decode(video=0)])
    (src,) = make_sources([probe(p)], CFG)
    batches = list(iter_embed_batches(src, CFG, batch, decode_block=5))
    frames = torch.cat([b.frame for b in batches])
    assert frames.tolist() == list(range(len(grey)))  # exactly what PyAV decodes, in order
    assert all(len(b.frame) == batch for b in batches[:-1])
    n_frames = len(grey)
    grey = resize_uint8(torch.from_numpy(grey).unsqueeze(1), (32, 48))[:, 0]
    live = torch.cat([b.frames for b in batches])
    assert torch.equal(live, grey[neighbor_indices(torch.arange(n_frames), 2, n_frames)])
    times = torch.cat([b.time_s for b in batches])
    assert times[:3].tolist() == pytest.approx([0.0, 0.05, 0.1])


def test_rgb_mode_and_time_window(tmp_path):
    p = write_video(tmp_path / "v.mp4", numbered_frames(40), fps=10, g=8)
    cfg = CFG.replace(**{"data.live_frames": False, "data.preprocess.start_s": 1.0, "data.preprocess.duration_s": 2.0})
    (src,) = make_sources([probe(p)], cfg)
    batches = list(iter_embed_batches(src, cfg, 8))
    frames = torch.cat([b.frame for b in batches])
    assert frames.tolist() == list(range(10, 30))
    rgb = decode_rgb(p)
    ref = resize_uint8(torch.from_numpy(rgb).permute(0, 3, 1, 2), (32, 48))[10:30]
    assert torch.equal(torch.cat([b.frames for b in batches]), ref)


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


def test_embed_videos_outputs_and_bad_inputs(tmp_path, weights):
    path, model = weights
    good = write_video(tmp_path / "good.mp4", numbered_frames(30), g=8)
    short = write_video(tmp_path / "short.mp4", numbered_frames(3))
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    out = tmp_path / "emb"
    manifest = embed_videos([good, short, junk], path, out, batch_size=8, device="cpu")
    x = np.load(out / "good.npy")
    rows = np.loadtxt(out / "good.csv", delimiter=",", skiprows=1)
    assert x.shape == (30, 16) and x.dtype == np.float32
    assert rows[:, 0].tolist() == list(range(30))
    assert {f["video"].split("/")[-1] for f in manifest["failed"]} == {"short.mp4", "junk.mp4"}
    assert json.loads((out / "manifest.json").read_text())["videos"][0]["frames"] == 30
    assert not list(out.glob("*.partial"))
    # same numbers as running the encoder on the reference live frames
    (src,) = make_sources([probe(good)], CFG)
    live = torch.cat([b.frames for b in iter_embed_batches(src, CFG, 64)])
    with torch.no_grad():
        ref = model.encoder(live.float() / 255).numpy()
    np.testing.assert_allclose(x, ref, rtol=1e-4, atol=1e-4)


def test_stem_collisions_are_refused(tmp_path, weights):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    a = write_video(tmp_path / "d1" / "same.mp4", numbered_frames(8))
    b = write_video(tmp_path / "d2" / "same.mp4", numbered_frames(8))
    with pytest.raises(SelfeeError, match="would both write 'same.npy'"):
        embed_videos([a, b], weights[0], tmp_path / "out")
