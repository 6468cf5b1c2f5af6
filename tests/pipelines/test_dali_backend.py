"""DALI backend plumbing on the CPU: GPU device indices, the probe graph, NVDEC lane rules."""

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from selfee.errors import SelfeeError
from selfee.video import VideoInfo


@pytest.fixture
def backend():
    pytest.importorskip("nvidia.dali")
    from selfee.pipelines import backend

    return backend


@pytest.fixture
def fake_gpu(monkeypatch):
    """CUDA that says it is there, with device 2 current (nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    return 2


def info(codec="h264", width=64, height=48, pix="yuv420p", profile=None, vfr=False) -> VideoInfo:
    return VideoInfo(Path(f"v.{codec}"), 10, 25.0, width, height, codec, profile, pix, Fraction(1, 25),
                     np.arange(10), np.array([0]), vfr)


# ---------------------------------------------------------------------------------------------
# A GPU DALI cannot run on is reported (a bare "cuda" gets its index: tests/core/test_runtime.py)
# ---------------------------------------------------------------------------------------------


def test_without_cuda_the_backend_says_so(backend, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    backend.backend_error.cache_clear()
    try:
        assert backend.backend_error("cuda", None) == "no CUDA GPU is available"
    finally:
        backend.backend_error.cache_clear()


def test_the_gpu_probe_feeds_a_tensor_on_an_indexed_device(backend, fake_gpu, monkeypatch):
    """The probe graph's input tensor and device_id name the GPU, also when asked with index None
    (``torch.ones(device="cuda:None")`` raised "Invalid device string", so DALI never ran on one GPU)."""
    seen = {}

    class Out:
        def as_cpu(self):
            return self

        def as_tensor(self):
            return np.full((1, 2, 2, 3), 2.0)  # what x * 2.0 gives for the ones fed

    class Pipe:
        def build(self):
            pass

        def feed_input(self, name, data):
            seen["fed"] = data

        def run(self):
            return (Out(),)

    def sync_pipeline(batch_size, device_id, num_threads=2, conditionals=False):
        seen["device_id"] = device_id
        return lambda graph: Pipe

    real_ones = torch.ones

    def ones(*shape, device=None, **kw):
        seen["device"] = torch.device(device)  # a bad device string raises here, as torch.ones would
        return real_ones(*shape, **kw)

    monkeypatch.setattr(backend, "sync_pipeline", sync_pipeline)
    monkeypatch.setattr(torch, "ones", ones)
    backend.backend_error.cache_clear()
    try:
        assert backend.backend_error("cuda", None) is None
        assert seen["device"] == torch.device("cuda", 2) and seen["device_id"] == 2
        assert backend.backend_error("cuda", 1) is None
        assert seen["device"] == torch.device("cuda", 1) and seen["device_id"] == 1
    finally:
        backend.backend_error.cache_clear()


def test_pipelines_probe_dali_with_the_index_of_a_bare_cuda(backend, fake_gpu, monkeypatch, tmp_path):
    from dali_helpers import cfg_for, textured_frames

    from conftest import write_video
    from selfee.data import choose_pipeline, make_sources
    from selfee.pipelines.embed import dali_embed_batches
    from selfee.video import probe

    asked = []

    def backend_error(device_type, index):
        asked.append((device_type, index))
        return "no GPU in this test"

    monkeypatch.setattr("selfee.pipelines.backend.backend_error", backend_error)  # what choose_pipeline asks
    monkeypatch.setattr("selfee.pipelines.embed.backend_error", backend_error)
    cfg = cfg_for()  # train.pipeline=dali, embed.pipeline=dali: a backend error is raised, naming the device
    sources = make_sources([probe(write_video(tmp_path / "v.mp4", textured_frames(20)))], cfg)
    with pytest.raises(SelfeeError, match=r"DALI cannot run on cuda:2 \(no GPU in this test\)"):
        choose_pipeline(cfg, "cuda")
    with pytest.raises(SelfeeError, match=r"DALI cannot run on cuda:2 \(no GPU in this test\)"):
        dali_embed_batches(sources[0], cfg, 8, "cuda")
    with pytest.raises(SelfeeError, match=r"DALI cannot run on cuda:2"):
        dali_embed_batches(sources[0], cfg, 8, "auto")
    assert asked == [("cuda", 2)] * 3


# ---------------------------------------------------------------------------------------------
# Decode lanes: NVDEC's limits per codec (NVDEC Video Decoder API Programming Guide)
# ---------------------------------------------------------------------------------------------

GPU, CPU = torch.device("cuda", 0), torch.device("cpu")


@pytest.mark.parametrize("codec, smallest, largest", [
    ("h264", (48, 16), (4096, 4096)),
    ("hevc", (144, 144), (8192, 8192)),
    ("vp8", (48, 16), (4096, 4096)),
    ("vp9", (128, 128), (8192, 8192)),
    ("av1", (128, 128), (8192, 8192)),
    ("mpeg4", (48, 16), (2032, 2032)),
])
def test_nvdec_size_limits_per_codec(backend, codec, smallest, largest):
    (w0, h0), (w1, h1) = smallest, largest
    for w, h in ((w0, h0), (w1, h1), (w0, h1), (w1, h0)):
        assert backend.choose_lane(info(codec, w, h), GPU) == ("nvdec", f"{codec} yuv420p on NVDEC")
    for w, h in ((w0 - 2, h0), (w0, h0 - 2), (w1 + 2, h0), (w0, h1 + 2)):
        lane, why = backend.choose_lane(info(codec, w, h), GPU)
        assert lane == "pyav", (codec, w, h)
        assert why == f"frame size {w}x{h} is outside NVDEC's limits for {codec} ({w0}x{h0} to {w1}x{h1})"


def test_nvdec_formats_and_other_lanes(backend):
    lane = lambda *a, dev=GPU, **kw: backend.choose_lane(info(*a, **kw), dev)[0]  # noqa: E731
    assert lane("h264", 1920, 1080) == "nvdec"
    assert lane("hevc", 256, 142) == "pyav" and lane("hevc", 142, 256) == "pyav"  # HEVC needs 144x144
    assert lane("hevc", 144, 144) == "nvdec" and lane("h264", 144, 142) == "nvdec"
    assert lane("vp9", 96, 96) == "pyav" and lane("vp8", 96, 96) == "nvdec" and lane("h264", 96, 96) == "nvdec"
    # H.264 High 4:4:4 is not decodable by NVDEC (real example: m3v1mp4.mp4); nor is 10-bit H.264
    assert backend.choose_lane(info("h264", pix="yuv444p", profile="High 4:4:4 Predictive"), GPU) == (
        "pyav", "NVDEC does not decode h264 High 4:4:4 Predictive yuv444p")
    assert lane("h264", pix="yuv420p10le") == "pyav"
    assert lane("hevc", 256, 256, pix="yuv420p10le") == "nvdec" and lane("hevc", 256, 256, pix="yuv444p") == "pyav"
    assert lane("mpeg2video") == "pyav" and lane("vc1") == "pyav"  # DALI maps neither to NVDEC
    assert lane("h264", 66, 48) == "nvdec" and lane("h264", 65, 48) == "pyav"  # odd sizes
    assert lane("h264", vfr=True) == "pyav"
    assert lane("vp9", dev=CPU) == "dali-cpu" and lane("h264", dev=CPU) == "pyav"
    assert backend.choose_lane(info("vp9"), CPU, cpu_decoder="pyav")[0] == "pyav"
