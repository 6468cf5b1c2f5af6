"""The DALI CPU lane on the real videos in ../shared/data (skipped when absent)."""

import pytest
import torch

pytest.importorskip("nvidia.dali")

from dali_helpers import as_uint8, cfg_for, max_abs_diff, take, transcode  # noqa: E402

from conftest import real_video  # noqa: E402
from selfee.data import BlockLoader, make_sources  # noqa: E402
from selfee.embed import iter_embed_batches  # noqa: E402
from selfee.pipelines.embed import dali_embed_batches  # noqa: E402
from selfee.pipelines.train import DaliTrainPipeline  # noqa: E402
from selfee.video import probe  # noqa: E402


def test_training_parity_on_a_real_fly_video(shared_data):
    """H.264 on the CPU goes through PyAV (DALI's CPU decoder does not read it): this checks the DALI
    lane's plumbing (plans, preprocessing, live frames, views), not DALI's decoding."""
    p = real_video(shared_data, "centered_pair_small.mp4")
    cfg = cfg_for(**{"data.preprocess.duration_s": 20.0, "data.chunk_frames": 64})
    sources = make_sources([probe(p)], cfg)
    ref = take(BlockLoader(sources, cfg), 2)
    pipe = DaliTrainPipeline(sources, cfg, "cpu")
    ours = take(pipe, 2)
    for a, r in zip(ours, ref):
        assert torch.equal(a.frame, r.frame) and torch.equal(as_uint8(a.view1), r.frames)


def test_embedding_count_on_444_h264(shared_data):
    p = real_video(shared_data, "m3v1mp4.mp4")  # H.264 4:4:4: PyAV on CPU (NVDEC would reject it)
    # From the start: after a seek, PyAV's frame-threaded decode of this file is not deterministic
    cfg = cfg_for(**{"data.preprocess.duration_s": 2.0})
    (src,) = make_sources([probe(p)], cfg)
    ours = list(dali_embed_batches(src, cfg, 16, "cpu"))
    ref = list(iter_embed_batches(src, cfg, 16))
    assert torch.cat([b.frame for b in ours]).tolist() == torch.cat([b.frame for b in ref]).tolist()
    assert torch.equal(torch.cat([b.frames for b in ours]), torch.cat([b.frames for b in ref]))


def test_dali_cpu_decoder_on_a_real_clip_transcoded_to_vp9(shared_data, tmp_path):
    """DALI's own decoding of real footage: the first 120 frames of the mouse video re-encoded to VP9
    (as decoded, YUV in and out), through DALI's CPU decoder against the PyAV reference of that file."""
    try:
        p = transcode(real_video(shared_data, "mouse_video.mp4"), tmp_path / "mouse.webm", 120)
    except Exception as exc:  # no libvpx-vp9 in this FFmpeg build
        pytest.skip(f"no VP9 encoder: {exc}")
    cfg = cfg_for(**{"data.input_size": [120, 160], "data.chunk_frames": 32, "data.holdout_fraction": 0})
    sources = make_sources([probe(p)], cfg)
    assert sources[0].frames == 120
    ref = take(BlockLoader(sources, cfg), 3)
    pipe = DaliTrainPipeline(sources, cfg, "cpu")
    assert pipe.lanes == {"mouse.webm": "dali-cpu"}
    ours = [b for _, b in zip(range(3), pipe)]
    pipe.close()
    for a, r in zip(ours, ref):
        # grey footage: DALI's YUV -> RGB -> luma round trip only rounds (measured: max 1, mean 0.15 at full size)
        assert torch.equal(a.frame, r.frame) and max_abs_diff(as_uint8(a.view1), r.frames) <= 1
    cfg = cfg_for(**{"data.input_size": [480, 640]})  # embedding at the video's own size: no resize at all
    (src,) = make_sources([probe(p)], cfg)
    ours = list(dali_embed_batches(src, cfg, 32, "cpu"))
    ref = list(iter_embed_batches(src, cfg, 32))
    assert torch.cat([b.frame for b in ours]).tolist() == torch.cat([b.frame for b in ref]).tolist() == list(range(120))
    assert max_abs_diff(torch.cat([b.frames for b in ours]), torch.cat([b.frames for b in ref])) <= 1
