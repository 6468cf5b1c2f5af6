"""GPU lane (NVDEC decode + GPU augmentation): run only where a CUDA GPU and DALI are present."""

import logging

import pytest
import torch

pytest.importorskip("nvidia.dali")

from dali_helpers import as_uint8, cfg_for, reference_grey, textured_frames  # noqa: E402

from conftest import real_video, write_video  # noqa: E402
from selfee.data import make_sources  # noqa: E402
from selfee.live_frames import neighbor_indices  # noqa: E402
from selfee.video import probe  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.dali,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("gpu") / "g.mp4", textured_frames(90, 64, 96), g=16, bf=2, crf=0)


def test_nvdec_training_views_on_the_gpu(h264):
    from selfee.pipelines.train import DaliTrainPipeline

    cfg = cfg_for(**{"data.holdout_fraction": 0})
    sources = make_sources([probe(h264)], cfg)
    pipe = DaliTrainPipeline(sources, cfg, "cuda")
    assert pipe.lanes == {"g.mp4": "nvdec"}
    ref = reference_grey(h264, (32, 48))
    for _, b in zip(range(4), pipe):
        assert b.view1.is_cuda and b.view1.is_contiguous(memory_format=torch.channels_last)
        live = ref[neighbor_indices(b.frame, 2, sources[0].frames)]
        assert (as_uint8(b.view1).cpu().int() - live.int()).abs().float().mean() < 2.0  # NVDEC's colour conversion
    pipe.close()


def test_gpu_augmentation_matches_the_reference_draws(h264):
    from selfee.data import TorchPipeline
    from selfee.pipelines.train import DaliTrainPipeline

    cfg = cfg_for(**{"augment.enabled": True, "data.holdout_fraction": 0})
    sources = make_sources([probe(h264)], cfg)
    ours = DaliTrainPipeline(sources, cfg, "cuda")
    b = next(iter(ours))
    ours.close()
    assert b.view1.is_cuda and not torch.allclose(b.view1, b.view2)
    assert 0 <= b.view1.min() and b.view1.max() <= 1
    ref = TorchPipeline(sources, cfg, "cpu")
    r = next(iter(ref))
    ref.close()
    assert torch.equal(b.frame, r.frame)


def test_nvdec_embedding_counts_and_device(h264):
    from selfee.pipelines.embed import dali_embed_batches

    cfg = cfg_for()
    (src,) = make_sources([probe(h264)], cfg)
    batches = list(dali_embed_batches(src, cfg, 16, "cuda"))
    assert torch.cat([b.frame for b in batches]).tolist() == list(range(90))
    assert batches[0].frames.is_cuda


@pytest.mark.realdata
def test_444_h264_falls_back_to_cpu_decoding(shared_data, caplog):
    from selfee.pipelines.embed import dali_embed_batches

    p = real_video(shared_data, "m3v1mp4.mp4")
    cfg = cfg_for(**{"data.preprocess.duration_s": 1.0})
    (src,) = make_sources([probe(p)], cfg)
    with caplog.at_level(logging.WARNING, logger="selfee"):
        n = sum(len(b.frame) for b in dali_embed_batches(src, cfg, 16, "cuda"))
    assert n == src.frames and "m3v1mp4.mp4: decoding with pyav (NVDEC does not decode h264" in caplog.text
