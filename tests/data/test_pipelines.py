"""The training pipelines and the one switch between them (DALI's own tests are in tests/pipelines)."""

import logging

import pytest
import torch

from selfee.data import TorchPipeline, build_pipeline, choose_pipeline, make_sources
from selfee.errors import SelfeeError
from selfee.fallback import FallbackError
from selfee.video import probe

from .conftest import loader_cfg


def test_pipeline_yields_augmented_views(videos):
    cfg = loader_cfg(**{"augment.enabled": True, "train.channels_last": True})
    sources = make_sources([probe(v) for v in videos], cfg)
    pipe = TorchPipeline(sources, cfg, "cpu")
    batch = next(iter(pipe))
    pipe.close()
    assert batch.view1.shape == (8, 3, 32, 48) and batch.view1.dtype == torch.float32
    assert batch.view1.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(batch.view1, batch.view2)



# ---------------------------------------------------------------------------------------------
# The one switch: which pipeline runs, and a DALI path that cannot be taken is said (or, strict, an error)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def dali_fails(monkeypatch):
    """DALI installed, but its test graph does not run on any device here."""
    pytest.importorskip("nvidia.dali")
    asked = []

    def backend_error(device_type, index):
        asked.append((device_type, index))
        return "no usable DALI backend (test)"

    monkeypatch.setattr("selfee.pipelines.backend.backend_error", backend_error)
    return asked


def test_torch_and_synthetic_are_taken_as_asked_and_auto_on_the_cpu_is_torch(dali_fails):
    for kind, taken in [("torch", "torch"), ("synthetic", "synthetic"), ("auto", "torch")]:
        choice = choose_pipeline(loader_cfg(**{"train.pipeline": kind}), "cpu")
        assert choice.name == taken and choice.fallback is None
        assert choice.record(kind) == {"wanted": kind, "taken": taken, "why": choice.why, "fallback": False}
    assert dali_fails == []  # no DALI graph was tried: on the CPU, auto means the reference


def test_auto_on_a_gpu_without_dali_is_a_fallback_said_out_loud_and_refused_when_strict(monkeypatch):
    monkeypatch.setattr("selfee.backend.available", lambda name: False)
    monkeypatch.delenv("SELFEE_STRICT", raising=False)
    choice = choose_pipeline(loader_cfg(**{"train.pipeline": "auto"}), "cuda:0")
    assert choice.name == "torch" and choice.fallback["taken"] == "the torch pipeline"
    assert "not installed" in choice.why
    monkeypatch.setenv("SELFEE_STRICT", "1")
    with pytest.raises(FallbackError, match="DALI is not installed"):
        choose_pipeline(loader_cfg(**{"train.pipeline": "auto"}), "cuda:0")


def test_auto_where_dali_cannot_run_falls_back_out_loud_and_strict_mode_refuses(dali_fails, videos, caplog,
                                                                                 monkeypatch):
    cfg = loader_cfg(**{"train.pipeline": "auto"})
    monkeypatch.delenv("SELFEE_STRICT", raising=False)
    with caplog.at_level(logging.WARNING, logger="selfee"):
        choice = choose_pipeline(cfg, "cuda:1")
    assert choice.name == "torch" and dali_fails == [("cuda", 1)]
    assert choice.fallback == {"wanted": "the DALI training pipeline", "taken": "the torch pipeline",
                               "why": "DALI cannot run on cuda:1: no usable DALI backend (test)"}
    assert caplog.messages == ["the DALI training pipeline unavailable (DALI cannot run on cuda:1: no usable DALI "
                               "backend (test)); using the torch pipeline"]
    pipe = build_pipeline(cfg, make_sources([probe(videos[0])], cfg), "cpu", backend=choice)
    assert isinstance(pipe, TorchPipeline) and pipe.choice["fallback"] and pipe.choice["taken"] == "torch"
    pipe.close()
    monkeypatch.setenv("SELFEE_STRICT", "1")
    with pytest.raises(FallbackError, match="strict mode forbids falling back to the torch pipeline"):
        choose_pipeline(cfg, "cuda:1")


def test_dali_forced_where_it_cannot_run_is_an_error(dali_fails):
    with pytest.raises(SelfeeError, match=r"train.pipeline=dali: DALI cannot run on cpu \(no usable DALI backend"):
        choose_pipeline(loader_cfg(**{"train.pipeline": "dali"}), "cpu")
