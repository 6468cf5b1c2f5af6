"""The export backends on a GPU (gpu / trt markers, strict like every GPU test): ONNX Runtime's CUDA path,
TorchScript fp16/bf16 verified on the full ResNet-50 (2048-d backbone), and a TensorRT FP16 engine fed
frames that DALI decoded with NVDEC, against the eager encoder on the PyAV reference frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import make_tiny_cfg
from selfee.export.graph import MIN_COSINE, random_frames

from .conftest import CFG, cosine_min, reference

pytestmark = pytest.mark.gpu


def test_onnx_runtime_cuda_path(exports):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without the CUDA provider (pip install onnxruntime-gpu)")
    from selfee.export.runtime import OnnxEmbedder

    gpu = OnnxEmbedder(exports["onnx"], "cuda")  # strict: a session without CUDA would raise here
    assert gpu.fallback is None and gpu.device.type == "cuda"
    assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    cpu = OnnxEmbedder(exports["onnx"], "cpu")
    xs = [random_frames(n, (32, 48), seed=n) for n in (7, 16, 3)]
    pending = [gpu.submit(x) for x in xs] + [gpu.submit(xs[0].cuda())]  # host frames and GPU frames
    for p, x in zip(pending, [*xs, xs[0]]):
        assert cosine_min(p.result(), cpu(x)) >= MIN_COSINE["fp32"]


@pytest.fixture(scope="module")
def resnet50(tmp_path_factory):
    """A random-weight checkpoint of the paper's model: ResNet-50 at 256 x 192."""
    from selfee.bench.embed import random_checkpoint

    cfg = make_tiny_cfg("model.arch=resnet50", "model.proj_dim=2048", "model.pred_hidden=512", "model.cld_dim=1024",
                        "data.input_size=[256,192]")
    return random_checkpoint(cfg, tmp_path_factory.mktemp("r50") / "r50.pt", seed=0)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_torchscript_half_precision_verifies_on_the_full_resnet50(resnet50, tmp_path, precision):
    """export_checkpoint verifies the export against the eager fp32 encoder and raises below MIN_COSINE."""
    from selfee.export.exporter import export_checkpoint

    report = export_checkpoint(resnet50, tmp_path, fmt="torchscript", precision=precision, device="cuda",
                               frames=32, quiet=True)
    (result,) = report["verification"]
    assert result["passed"] and result["threshold"] == MIN_COSINE[precision]
    worst = min(s["min_cosine"] for s in result["sets"].values())
    print(f"torchscript {precision} ResNet-50: min cosine {worst:.6f}")  # recorded by bench/gpu_check.sh's log


@pytest.mark.trt
def test_tensorrt_fp16_fed_by_nvdec_frames(tiny, clip, tmp_path):
    pytest.importorskip("nvidia.dali")
    from selfee.data import make_sources
    from selfee.export.exporter import export_checkpoint
    from selfee.export.tensorrt import TensorRTEmbedder
    from selfee.pipelines.embed import dali_embed_batches
    from selfee.video import probe

    report = export_checkpoint(tiny[0], tmp_path, fmt="onnx", trt=True, precision="fp16", max_batch=16,
                               device="cuda", frames=8, quiet=True)
    engine = next(f for f in report["files"] if f.endswith(".engine"))
    emb = TensorRTEmbedder(engine, "cuda")
    cfg = CFG.replace(**{"embed.pipeline": "dali"})
    (src,) = make_sources([probe(clip)], cfg)
    record = {}
    outs, frames = [], []
    for b in dali_embed_batches(src, cfg, 16, "cuda", record=record):
        assert b.frames.is_cuda  # NVDEC's frames go to TensorRT without a trip through the host
        outs.append(emb.submit(b.frames).result())
        frames.append(b.frame)
    assert record["lane"] == "nvdec" and "fallback" not in record
    got = np.concatenate(outs)
    ref = reference(tiny[1], clip)
    assert torch.cat(frames).tolist() == list(range(len(ref)))
    # NVDEC's YUV -> RGB differs from PyAV's by a grey level at most; FP16 on top
    assert cosine_min(got, ref) >= MIN_COSINE["fp16"] - 0.001
