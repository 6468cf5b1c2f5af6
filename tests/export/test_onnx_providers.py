"""ONNX Runtime's CUDA provider counts only when the session has it (session.get_providers()).

onnxruntime-gpu lists CUDAExecutionProvider as available even where it cannot load it, and then
silently builds a CPU session. Here the installed (CPU) onnxruntime plays that part: it is told CUDA is
available, is asked for it, and builds a session without it.
"""

import logging

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from selfee.export.graph import random_frames  # noqa: E402
from selfee.fallback import FallbackError  # noqa: E402

CUDA = "CUDAExecutionProvider"


@pytest.fixture
def lying_gpu(monkeypatch):
    """A GPU device asked for, and an onnxruntime that lists the CUDA provider it cannot load."""
    import onnxruntime as ort

    from selfee.export import runtime

    real_resolve = runtime.resolve_device
    monkeypatch.setattr(runtime, "resolve_device", lambda device, index=False: torch.device("cuda", 0)
                        if str(device) == "cuda" else real_resolve(device, index=index))
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, "CPUExecutionProvider"])
    asked = []
    real = ort.InferenceSession

    def session(path, opts=None, providers=None, **kw):
        asked.append(providers)
        return real(path, opts, providers=["CPUExecutionProvider"], **kw)  # what a CUDA provider failing to load gives

    monkeypatch.setattr(ort, "InferenceSession", session)
    return asked


def test_a_session_without_the_cuda_provider_falls_back_to_the_cpu_out_loud(exports, lying_gpu, caplog):
    from selfee.export.runtime import OnnxEmbedder

    cpu = OnnxEmbedder(exports["onnx"], "cpu")
    with caplog.at_level(logging.WARNING, logger="selfee"):
        emb = OnnxEmbedder(exports["onnx"], "cuda")
    assert lying_gpu[-1][0] == (CUDA, {"device_id": 0})  # CUDA was asked for
    assert emb.session.get_providers() == ["CPUExecutionProvider"]
    assert emb.device == torch.device("cpu")  # no CUDA pointers bound to a CPU session
    assert emb.fallback["wanted"] == "ONNX Runtime's CUDA provider"
    assert emb.fallback["taken"] == "ONNX Runtime on the CPU"
    assert "could not load its CUDA provider" in emb.fallback["why"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and "CPUExecutionProvider" in caplog.text
    x = random_frames(5, (32, 48), seed=1)
    np.testing.assert_allclose(emb.submit(x).result(), cpu(x), rtol=1e-6)


def test_strict_mode_refuses_the_cpu_session(exports, lying_gpu, monkeypatch):
    from selfee.export.runtime import OnnxEmbedder

    monkeypatch.setenv("SELFEE_STRICT", "1")
    with pytest.raises(FallbackError, match=r"ONNX Runtime's CUDA provider unavailable \(onnxruntime-gpu could not "
                                            r"load its CUDA provider"):
        OnnxEmbedder(exports["onnx"], "cuda")


def test_an_onnxruntime_without_cuda_falls_back_too(exports, lying_gpu, monkeypatch):
    import onnxruntime as ort

    from selfee.export.runtime import OnnxEmbedder

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    emb = OnnxEmbedder(exports["onnx"], "cuda")
    assert lying_gpu[-1] == ["CPUExecutionProvider"] and emb.device.type == "cpu"
    assert "pip install onnxruntime-gpu" in emb.fallback["why"]
    monkeypatch.setenv("SELFEE_STRICT", "1")
    with pytest.raises(FallbackError, match="this onnxruntime has no CUDA provider"):
        OnnxEmbedder(exports["onnx"], "cuda")


def test_a_cpu_session_asked_for_the_cpu_is_no_fallback(exports, monkeypatch):
    from selfee.export.runtime import OnnxEmbedder

    monkeypatch.setenv("SELFEE_STRICT", "1")
    emb = OnnxEmbedder(exports["onnx"], "cpu")
    assert emb.fallback is None and emb.device.type == "cpu"
