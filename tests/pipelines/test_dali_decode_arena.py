"""Arena correction inside the DALI graph: ``fn.experimental.warp_perspective`` (+ the plus-maze mask)
on DALI's lanes, equal to the torch ``ArenaWarp`` within one grey level."""

import numpy as np
import pytest
import torch

from conftest import write_video
from selfee.live_frames import rgb_to_gray_np
from selfee.video import probe

pytest.importorskip("nvidia.dali")

from dali_helpers import as_uint8, cfg_for, take, textured_frames  # noqa: E402

from selfee.data import BlockLoader, make_sources, plan_chunks  # noqa: E402
from selfee.embed import iter_embed_batches  # noqa: E402
from selfee.pipelines.decode import DaliChunkDecoder, stream_blocks  # noqa: E402
from selfee.video.arena import MASK_FILL, ArenaWarp  # noqa: E402

S = 48  # arena side: also the input size, so that no resize blurs the comparison
ARENAS = {
    "open_field": [[14, 6], [84, 10], [90, 58], [8, 54]],  # clockwise from the upper left, in a 96 x 64 frame
    "plus_maze": [[6, 34], [90, 30], [50, 2], [46, 62]],  # open-arm ends, then closed-arm ends
}


def grey_content(n, h, w, seed=0):
    """Textured frames with R = G = B: neutral chroma, so DALI's and PyAV's decoders agree to a grey level."""
    return np.repeat(rgb_to_gray_np(textured_frames(n, h, w, seed))[..., None], 3, axis=-1)


@pytest.fixture(scope="module")
def vp9(tmp_path_factory):
    p = tmp_path_factory.mktemp("arena") / "arena.webm"
    try:
        return write_video(p, grey_content(40, 64, 96), codec="libvpx-vp9", g=10)
    except Exception as exc:
        pytest.skip(f"no VP9 encoder: {exc}")


def arena_cfg(kind, live=True, **over):
    return cfg_for(**{"data.holdout_fraction": 0, "data.live_frames": live, "data.input_size": [S, S],
                      "data.preprocess.arena": kind, "data.preprocess.arena_corners": ARENAS[kind],
                      "data.preprocess.arena_size": S, **over})


def decode_both(path, cfg, device="cpu"):
    """Working-size frames of every chunk: warped in the DALI graph, and by torch after DALI; each decoder's
    lane is checked after decoding (a DALI failure would have moved the video to PyAV)."""
    (src,) = make_sources([probe(path)], cfg)
    chunks = plan_chunks(0, src, 2, 16, 0, src.frames)
    out = []
    lane = "nvdec" if torch.device(device).type == "cuda" else "dali-cpu"
    for dali_warp in (True, False):
        dec = DaliChunkDecoder([src], cfg.data.live_frames, (S, S), torch.device(device), threads=1,
                               dali_warp=dali_warp)
        out.append(dec.decode_many(chunks))
        dec.close()
        assert dec.lanes == {0: lane} and "fallback" not in dec.decode_paths[0]
    return src, chunks, out[0], out[1]


@pytest.mark.parametrize("kind", list(ARENAS))
@pytest.mark.parametrize("live", [False, True])
def test_the_warp_in_the_dali_graph_equals_the_torch_warp(vp9, kind, live):
    cfg = arena_cfg(kind, live)
    src, chunks, ours, ref = decode_both(vp9, cfg)
    channels = 1 if live else 3
    for x, y, c in zip(ours, ref, chunks):
        assert x.shape == y.shape == (c.decode_stop - c.decode_start, channels, S, S) and x.dtype == torch.uint8
        assert int((x.int() - y.int()).abs().max()) <= 1
        assert (x != y).float().mean() < 0.02
    keep = src.pre.arena.arena.keep_mask()
    if keep is not None:  # the closed corners of the plus maze: filled, exactly
        for x in ours:
            assert (x[..., ~torch.from_numpy(keep)] == MASK_FILL).all()


def test_background_subtraction_after_the_dali_warp(vp9, tmp_path, monkeypatch):
    """The steps after the warp (here the mean background, computed from the warped configuration and
    cached once for both) are the reference's."""
    monkeypatch.setenv("SELFEE_CACHE", str(tmp_path / "cache"))
    cfg = arena_cfg("plus_maze", **{"data.preprocess.background": "mean", "data.preprocess.invert": True})
    _, chunks, ours, ref = decode_both(vp9, cfg)
    assert len(list((tmp_path / "cache" / "backgrounds").glob("*.npy"))) == 1
    d = torch.cat([(x.int() - y.int()).abs() for x, y in zip(ours, ref)])
    assert d.float().mean() < 0.01 and int(d.max()) <= 2  # |frame - bg| can turn a 1-level step into 2 at .5


def test_no_torch_warp_runs_for_frames_dali_warped(vp9, monkeypatch):
    cfg = arena_cfg("open_field")
    (src,) = make_sources([probe(vp9)], cfg)
    chunks = plan_chunks(0, src, 2, 16, 0, src.frames)
    dec = DaliChunkDecoder([src], True, (S, S), torch.device("cpu"), threads=1)
    monkeypatch.setattr(ArenaWarp, "__call__", lambda self, x: pytest.fail("torch warp on a DALI lane"))
    out = dec.decode_many(chunks)
    dec.close()
    assert dec.lanes == {0: "dali-cpu"} and out[0].shape[-2:] == (S, S)


@pytest.mark.parametrize("kind", list(ARENAS))
def test_dali_lane_with_an_arena_against_the_pyav_reference_lane(vp9, kind):
    from selfee.pipelines.train import DaliTrainPipeline

    cfg = arena_cfg(kind)
    sources = make_sources([probe(vp9)], cfg)
    ref = take(BlockLoader(sources, cfg), 6)
    pipe = DaliTrainPipeline(sources, cfg, "cpu", prefetch=0)
    ours = take(pipe, 6)
    assert pipe.lanes == {"arena.webm": "dali-cpu"}
    for a, r in zip(ours, ref):
        assert torch.equal(a.frame, r.frame) and a.view1.shape == r.frames.shape == (8, 3, S, S)
        d = (as_uint8(a.view1).int() - r.frames.int()).abs()
        # DALI's decoder gives RGB (the grey rule takes the luma back) where PyAV's gives the luma plane,
        # and DALI warps before the grey rule, torch after it: each only rounds. Measured within 1 level
        # (on 0.03-0.1 % of values) on this grey content; in principle the two roundings could add to 2.
        assert int(d.max()) <= 1 and d.float().mean() < 0.01


@pytest.mark.parametrize("kind", list(ARENAS))
def test_embedding_with_an_arena(vp9, kind):
    from selfee.pipelines.embed import dali_embed_batches

    cfg = arena_cfg(kind)
    (src,) = make_sources([probe(vp9)], cfg)
    ours = list(dali_embed_batches(src, cfg, 16, "cpu", sequence=8))
    # the same DALI frames, warped by torch in the preprocessing (the old path)
    torch_warped = list(iter_embed_batches(src, cfg, 16, blocks=stream_blocks(src, torch.device("cpu"), 8)))
    ref = list(iter_embed_batches(src, cfg, 16))  # the PyAV reference
    frames = torch.cat([b.frame for b in ours])
    assert frames.tolist() == torch.cat([b.frame for b in ref]).tolist() == list(range(40))
    x, y, z = (torch.cat([b.frames for b in bs]) for bs in (ours, torch_warped, ref))
    assert x.shape == z.shape == (40, 3, S, S) and x.dtype == torch.uint8
    assert int((x.int() - y.int()).abs().max()) <= 1
    assert int((x.int() - z.int()).abs().max()) <= 1  # as in training (live frames, grey content)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", list(ARENAS))
def test_the_warp_on_nvdec_frames_equals_the_torch_warp(tmp_path, kind):
    """The GPU lane: ``warp_perspective`` on the GPU (CV-CUDA) against torch's warp of the same NVDEC frames."""
    p = write_video(tmp_path / "g.mp4", grey_content(40, 64, 96), g=10, bf=2, crf=0)
    cfg = arena_cfg(kind)
    _, chunks, ours, ref = decode_both(p, cfg, "cuda")  # strict, and NVDEC's lane checked after decoding
    for x, y in zip(ours, ref):
        assert x.is_cuda and int((x.int() - y.int()).abs().max()) <= 1
