"""A tiny checkpoint, its exports and small videos, shared by the export and bulk-embedding tests."""

from __future__ import annotations

import av
import numpy as np
import pytest

from selfee.bench.embed import random_checkpoint
from selfee.checkpoint import load_model
from selfee.config import SelfeeConfig

# ResNet-18 with a 16-d projector at 32 x 48, k = 2; frames from the PyAV reference decoder.
CFG = SelfeeConfig.load(
    preset="tiny",
    overrides=["data.input_size=[32,48]", "data.frame_interval=2", "model.proj_dim=16", "model.pred_hidden=8",
               "model.cld_dim=8", "embed.pipeline=torch"],
)


def decoded_count(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(checkpoint path, eager model) of a seeded, untrained tiny Selfee."""
    path = random_checkpoint(CFG, tmp_path_factory.mktemp("weights") / "tiny.pt", seed=0)
    return path, load_model(path)[0]


@pytest.fixture(scope="session")
def exports(tiny, tmp_path_factory):
    """{"torchscript": .ts, "onnx": .onnx} exported (and verified) once for the session."""
    from selfee.export.exporter import export_checkpoint

    out = tmp_path_factory.mktemp("exports")
    return {fmt: export_checkpoint(tiny[0], out, fmt=fmt, frames=4, quiet=True)["files"][0]
            for fmt in ("torchscript", "onnx")}


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Cached exports (the CPU default for checkpoints) go to a folder of the test session."""
    monkeypatch.setenv("SELFEE_CACHE", str(tmp_path_factory.getbasetemp() / "selfee-cache"))
