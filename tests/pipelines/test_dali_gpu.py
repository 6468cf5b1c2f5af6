"""GPU lane (NVDEC decode + GPU augmentation): run only where a CUDA GPU and DALI are present.

They run strict (tests/conftest.py: a fallback to PyAV is an error, not a pass on the reference's own
frames), and the lanes are checked after the frames were taken, when a failure would have moved them."""

import logging

import pytest
import torch

pytest.importorskip("nvidia.dali")

from dali_helpers import as_uint8, cfg_for, grey_frames, max_abs_diff, reference_grey, take, textured_frames  # noqa: E402

from conftest import real_video, write_video  # noqa: E402
from selfee.data import BlockLoader, make_sources  # noqa: E402
from selfee.embed import iter_embed_batches  # noqa: E402
from selfee.live_frames import neighbor_indices  # noqa: E402
from selfee.video import probe  # noqa: E402

pytestmark = pytest.mark.gpu

# Bounds (grey levels) against the PyAV reference, for grey content (neutral chroma, as grey / IR
# behaviour videos): DALI turns NVDEC's NV12 into RGB (BT.601, Y nearest, chroma bilinear) and the
# grey rule takes the luma back, which only rounds: <= 1 (a numpy model of DALI's kernel gives max 1
# on the synthetic and on every real video in ../shared/data). Resizing to the working size on the
# GPU uses torch's float kernel where the CPU reference uses the uint8 one (they agree to 1): <= 2.
# Saturated colours can differ more, where RGB clips (see test_dali_train.py).
DECODE_BOUND, RESIZED_BOUND = 1, 2


@pytest.fixture(scope="module")
def h264(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("gpu") / "g.mp4", textured_frames(90, 64, 96), g=16, bf=2, crf=0)


@pytest.fixture(scope="module")
def h264_grey(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("gpu-grey") / "grey.mp4", grey_frames(90, 64, 96), g=16, bf=2, crf=0)


@pytest.mark.parametrize("size, bound", [((64, 96), DECODE_BOUND), ((32, 48), RESIZED_BOUND)])
def test_nvdec_training_views_on_the_gpu(h264_grey, size, bound):
    from selfee.pipelines.train import DaliTrainPipeline

    cfg = cfg_for(**{"data.holdout_fraction": 0, "data.input_size": list(size)})
    sources = make_sources([probe(h264_grey)], cfg)
    pipe = DaliTrainPipeline(sources, cfg, "cuda")  # a bare "cuda", as single-GPU training passes it
    assert pipe.lanes == {"grey.mp4": "nvdec"} and pipe.device == torch.device("cuda", torch.cuda.current_device())
    ref = reference_grey(h264_grey, size)
    for _, b in zip(range(4), pipe):
        assert b.view1.is_cuda and b.view1.is_contiguous(memory_format=torch.channels_last)
        live = ref[neighbor_indices(b.frame, 2, sources[0].frames)]
        assert max_abs_diff(as_uint8(b.view1), live) <= bound
    pipe.close()
    assert pipe.lanes == {"grey.mp4": "nvdec"}  # still NVDEC after decoding
    assert "fallback" not in pipe.loader.decoder.decode_paths[0]


def test_nvdec_coloured_views_stay_close(h264):
    from selfee.pipelines.train import DaliTrainPipeline

    cfg = cfg_for(**{"data.holdout_fraction": 0})
    sources = make_sources([probe(h264)], cfg)
    pipe = DaliTrainPipeline(sources, cfg, "cuda")
    assert pipe.lanes == {"g.mp4": "nvdec"}
    ref = reference_grey(h264, (32, 48))
    for _, b in zip(range(4), pipe):
        live = ref[neighbor_indices(b.frame, 2, sources[0].frames)]
        d = (as_uint8(b.view1).cpu().int() - live.int()).abs()
        assert d.float().mean() < 1.0 and (d <= RESIZED_BOUND).float().mean() > 0.95  # clipped RGB: model 0.25
    pipe.close()
    assert pipe.lanes == {"g.mp4": "nvdec"}


def test_gpu_augmenter_matches_the_reference_for_the_same_frames():
    import torch.nn.functional as F

    from selfee.augment import apply, sample_params, to_float
    from selfee.config import AugmentConfig
    from selfee.pipelines.augment import DaliAugmenter

    cfg = AugmentConfig()
    g = torch.Generator().manual_seed(0)
    frames = F.avg_pool2d(torch.randint(0, 256, (24, 3, 46, 35), generator=g).float(), 3, 1, 1).round().to(torch.uint8)
    dev = torch.device("cuda", torch.cuda.current_device())
    aug = DaliAugmenter(cfg, 24, (32, 24), dev, num_threads=1)
    p1 = sample_params(24, (46, 35), cfg, torch.Generator().manual_seed(1))
    p2 = sample_params(24, (46, 35), cfg, torch.Generator().manual_seed(2))
    v1, v2 = aug(frames.to(dev), p1, p2)
    assert v1.is_cuda and v1.shape == (24, 3, 32, 24) and v1.is_contiguous(memory_format=torch.channels_last)
    for v, p in ((v1, p1), (v2, p2)):
        d = (v.cpu() - apply(to_float(frames), p, (32, 24))).abs()
        # as on the CPU lane: float rounding, a Turbo index at an exact .5, a pixel on the crop's edge
        assert (d <= 2e-3).float().mean() > 0.995 and d.mean() < 2e-3


def test_gpu_augmentation_matches_the_reference_draws(h264_grey):
    from selfee.data import TorchPipeline
    from selfee.pipelines.train import DaliTrainPipeline

    cfg = cfg_for(**{"augment.enabled": True, "data.holdout_fraction": 0})
    sources = make_sources([probe(h264_grey)], cfg)
    ours = DaliTrainPipeline(sources, cfg, "cuda")
    b = next(iter(ours))
    ours.close()
    assert ours.lanes == {"grey.mp4": "nvdec"}
    assert b.view1.is_cuda and not torch.allclose(b.view1, b.view2)
    assert 0 <= b.view1.min() and b.view1.max() <= 1
    ref = TorchPipeline(sources, cfg, "cpu")
    r = next(iter(ref))
    ref.close()
    assert torch.equal(b.frame, r.frame)
    # The same draws on frames within RESIZED_BOUND levels: measured on the CPU, frames 2 levels apart
    # on half the pixels move views by 0.003 on average (99 % within 0.022); other draws by 0.24.
    for x, y in ((b.view1, r.view1), (b.view2, r.view2)):
        d = (x.cpu() - y).abs()
        assert d.mean() < 0.01 and (d <= 0.05).float().mean() > 0.995


@pytest.mark.parametrize("size, bound", [((64, 96), DECODE_BOUND), ((32, 48), RESIZED_BOUND)])
def test_nvdec_embedding_counts_and_content(h264_grey, size, bound):
    from selfee.pipelines.embed import dali_embed_batches

    cfg = cfg_for(**{"data.input_size": list(size)})
    (src,) = make_sources([probe(h264_grey)], cfg)
    record = {}
    batches = list(dali_embed_batches(src, cfg, 16, "cuda", record=record))
    assert record["lane"] == "nvdec" and record["frames"] == {"nvdec": 90} and "fallback" not in record
    assert torch.cat([b.frame for b in batches]).tolist() == list(range(90))
    assert batches[0].frames.is_cuda
    ref = list(iter_embed_batches(src, cfg, 16))
    ours, want = torch.cat([b.frames.cpu() for b in batches]), torch.cat([b.frames for b in ref])
    assert ours.shape == want.shape == (90, 3) + size
    assert max_abs_diff(ours, want) <= bound  # frame content and order (the bar moves every frame)


def test_nvdec_parity_on_a_real_mouse_video(shared_data, caplog):
    from selfee.pipelines.embed import dali_embed_batches
    from selfee.pipelines.train import DaliTrainPipeline

    p = real_video(shared_data, "mouse_video.mp4")  # H.264 High 4:2:0, 640x480, grey footage
    cfg = cfg_for(**{"data.preprocess.duration_s": 4.0, "data.input_size": [480, 640]})  # no resize
    (src,) = make_sources([probe(p)], cfg)
    record = {}
    with caplog.at_level(logging.INFO, logger="selfee"):
        ours = list(dali_embed_batches(src, cfg, 32, "cuda", record=record))
    assert "mouse_video.mp4: decoding with nvdec" in caplog.text
    assert record["lane"] == "nvdec" and record["frames"] == {"nvdec": 120}
    ref = list(iter_embed_batches(src, cfg, 32))
    assert torch.cat([b.frame for b in ours]).tolist() == torch.cat([b.frame for b in ref]).tolist() == list(range(120))
    assert max_abs_diff(torch.cat([b.frames.cpu() for b in ours]), torch.cat([b.frames for b in ref])) <= DECODE_BOUND
    cfg = cfg_for(**{"data.preprocess.duration_s": 20.0, "data.chunk_frames": 64, "data.holdout_fraction": 0,
                     "data.input_size": [120, 160]})
    sources = make_sources([probe(p)], cfg)
    ref = take(BlockLoader(sources, cfg), 2)
    pipe = DaliTrainPipeline(sources, cfg, "cuda")
    assert pipe.lanes == {"mouse_video.mp4": "nvdec"}
    mine = [b for _, b in zip(range(2), pipe)]
    pipe.close()
    assert pipe.lanes == {"mouse_video.mp4": "nvdec"}
    for a, r in zip(mine, ref):
        assert torch.equal(a.frame, r.frame) and max_abs_diff(as_uint8(a.view1), r.frames) <= RESIZED_BOUND


def test_444_h264_falls_back_to_cpu_decoding(shared_data, caplog, monkeypatch):
    from selfee.fallback import FallbackError
    from selfee.pipelines.embed import dali_embed_batches

    p = real_video(shared_data, "m3v1mp4.mp4")
    cfg = cfg_for(**{"data.preprocess.duration_s": 1.0})
    (src,) = make_sources([probe(p)], cfg)
    with pytest.raises(FallbackError, match="m3v1mp4.mp4: NVDEC unavailable .NVDEC does not decode h264"):
        list(dali_embed_batches(src, cfg, 16, "cuda"))  # strict (as every GPU test)
    monkeypatch.delenv("SELFEE_STRICT")
    record = {}
    with caplog.at_level(logging.WARNING, logger="selfee"):
        n = sum(len(b.frame) for b in dali_embed_batches(src, cfg, 16, "cuda", record=record))
    assert n == src.frames and "m3v1mp4.mp4: NVDEC unavailable (NVDEC does not decode h264" in caplog.text
    assert record["lane"] == "pyav" and record["fallback"]["taken"] == "PyAV"
