"""Devices (one resolver for every command), prefetch threads and the version record."""

from __future__ import annotations

import threading
from importlib.metadata import PackageNotFoundError, version

import pytest
import torch

from selfee.errors import SelfeeError
from selfee.runtime import Cuda, background, indexed, resolve_device, versions


class FakeCuda(Cuda):
    """Two GPUs, device 1 current (nothing runs on them)."""

    def __init__(self, gpus: int = 2, current: int = 1):
        self.gpus, self.cur = gpus, current

    def available(self):
        return self.gpus > 0

    def count(self):
        return self.gpus

    def current(self):
        return self.cur


def test_auto_cpu_and_bad_names():
    assert resolve_device("auto", cuda=FakeCuda(0)) == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "meta", ""):
        with pytest.raises(SelfeeError, match="unknown device .* \\(use auto, cpu, cuda or cuda:N\\)"):
            resolve_device(bad)


def test_gpus_are_checked_and_indexed_on_request():
    gpus = FakeCuda()
    assert resolve_device("auto", cuda=gpus) == torch.device("cuda")
    assert resolve_device("cuda", cuda=gpus) == torch.device("cuda")
    assert resolve_device("cuda", index=True, cuda=gpus) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", index=True, cuda=gpus) == torch.device("cuda", 0)
    with pytest.raises(SelfeeError, match="device cuda:5 requested but PyTorch sees 2 GPU"):
        resolve_device("cuda:5", cuda=gpus)
    with pytest.raises(SelfeeError, match="no CUDA GPU is available \\(use --device cpu\\)"):
        resolve_device("cuda", cuda=FakeCuda(0))


def test_a_gpu_only_feature_refuses_the_cpu_and_takes_the_gpu_for_auto():
    assert resolve_device("auto", gpu="the X backend", index=True, cuda=FakeCuda()) == torch.device("cuda", 1)
    with pytest.raises(SelfeeError, match="the X backend runs on a GPU: use --device cuda"):
        resolve_device("cpu", gpu="the X backend", cuda=FakeCuda())


def test_indexed_gives_a_bare_cuda_its_number_and_leaves_the_rest(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    assert indexed("cuda") == indexed(torch.device("cuda")) == torch.device("cuda", 2)
    assert indexed("cuda:1") == torch.device("cuda", 1)
    assert indexed("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert indexed("cuda") == torch.device("cuda")  # left alone: the caller reports the missing GPU


def test_background_keeps_order_raises_in_the_consumer_and_stops_early():
    assert list(background(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("decode failed")

    it = background(failing())
    assert next(it) == 1
    with pytest.raises(ValueError, match="decode failed"):
        next(it)

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = background(endless(), depth=2)
    assert next(it) == 0
    it.close()  # the consumer stops: the thread must too
    n = len(produced)
    assert n <= 5 and not any(t.name == "selfee-prefetch" and t.is_alive() for t in threading.enumerate())


def test_versions_come_from_the_installed_packages():
    import platform

    import numpy as np

    from selfee import __version__

    v = versions()
    assert v["selfee_fast"] == __version__ and v["python"] == platform.python_version()
    assert v["torch"] == torch.__version__ and v["numpy"] == np.__version__
    assert v["av"] == version("av")  # a required dependency, read without importing it
    for key, dist in (("onnxruntime", "onnxruntime"), ("sklearn", "scikit-learn")):
        try:
            want = version(dist)
        except PackageNotFoundError:  # not installed here: not recorded
            want = None
        assert v.get(key) == want
    assert "tensorrt" not in v or v["tensorrt"]


def test_versions_name_the_distribution_that_provides_a_package(monkeypatch):
    """The GPU builds install under other names (onnxruntime-gpu, tensorrt-cu12, nvidia-dali-cuda120)."""
    import importlib.metadata

    from selfee import _deps

    installed = {"tensorrt-cu12": "10.9.0.34", "onnxruntime-gpu": "1.22.0", "nvidia-dali-cuda120": "1.50.0",
                 "torchvision": "0.99"}

    def version(dist):
        if dist not in installed:
            raise importlib.metadata.PackageNotFoundError(dist)
        return installed[dist]

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(_deps, "available", lambda name: name != "cv2")
    v = versions()
    assert (v["tensorrt"], v["onnxruntime"], v["dali"], v["torchvision"]) == ("10.9.0.34", "1.22.0", "1.50.0", "0.99")
    assert "cv2" not in v  # not importable: not recorded
