"""``--backend auto``: the choice by measurement (fake candidates on a fake clock), its cache, and a real CPU run;
forced backends/precisions and their fallbacks."""

import json
import logging

import numpy as np
import pytest
import torch

from selfee.embed import embed_videos
from selfee.errors import SelfeeError
from selfee.export import choose as C
from selfee.export.graph import random_frames
from selfee.export.open import candidates, find_export, open_embedder
from selfee.fallback import FallbackError

DIM = 8


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def fake(clock, cost: float, noise: bool = False, opened: list | None = None, name: str = ""):
    """A candidate opener: each call advances the clock by ``cost`` s per batch; ``noise``: wrong embeddings."""
    rng = np.random.default_rng(0)

    def run(frames):
        clock.t += cost
        x = frames.float().flatten(1)[:, :DIM].numpy()
        return rng.normal(size=x.shape).astype(np.float32) if noise else x

    def open_():
        if opened is not None:
            opened.append(name)
        return run

    return open_


def frames_and_reference():
    x = random_frames(32, (4, 4), seed=3)
    return x, x.float().flatten(1)[:, :DIM].numpy()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SELFEE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_fastest_accurate_candidate_wins_and_an_inaccurate_one_is_rejected(cache, caplog):
    clock = Clock()

    def broken():
        raise SelfeeError("not installed")

    cands = [C.Candidate("torch", "fp32", fake(clock, 0.10)), C.Candidate("torch", "bf16", fake(clock, 0.04)),
             C.Candidate("onnx", "int8", fake(clock, 0.01, noise=True)), C.Candidate("tensorrt", "fp16", broken)]
    with caplog.at_level(logging.INFO, logger="selfee"):
        emb, record = C.choose(cands, {"k": 1}, frames_and_reference, seconds=1.0, clock=clock, subject="w.pt")
    assert record["chosen"] == "torch bf16" and not record["cached"]
    rows = {f"{r['backend']} {r['precision']}": r for r in record["table"]}
    # 16 frames per batch, until 1 s has passed: 0.10 s -> 160 frames/s, 0.04 s -> 400, 0.01 s -> 1600
    assert rows["torch fp32"]["fps"] == pytest.approx(160) and rows["torch bf16"]["fps"] == pytest.approx(400)
    assert rows["onnx int8"]["fps"] > 400 and not rows["onnx int8"]["accurate"]  # fastest, but wrong: out
    assert rows["onnx int8"]["median_cosine"] < 0.99 and rows["torch fp32"]["median_cosine"] == pytest.approx(1.0)
    assert rows["tensorrt fp16"]["error"] == "SelfeeError: not installed"
    assert "torch bf16 chosen" in caplog.text and "rejected: below 0.99" in caplog.text
    assert json.loads(C.cache_file({"k": 1}).read_text())["chosen"] == "torch bf16"


def test_a_cached_choice_opens_only_the_winner_without_timing(cache):
    clock, opened = Clock(), []
    cands = [C.Candidate("torch", "fp32", fake(clock, 0.10, opened=opened, name="fp32")),
             C.Candidate("torch", "bf16", fake(clock, 0.04, opened=opened, name="bf16"))]
    C.choose(cands, {"k": 2}, frames_and_reference, seconds=1.0, clock=clock)
    opened.clear()

    def no_frames():
        raise AssertionError("a cache hit must not measure")

    emb, record = C.choose(cands, {"k": 2}, no_frames, seconds=1.0, clock=clock)
    assert opened == ["bf16"] and record["cached"] and record["chosen"] == "torch bf16"
    # another key (other weights, machine or input size) measures again
    _, other = C.choose(cands, {"k": 3}, frames_and_reference, seconds=1.0, clock=clock)
    assert not other["cached"]


def test_a_cached_choice_that_no_longer_opens_is_measured_again(cache):
    clock = Clock()
    fast = C.Candidate("onnx", "fp32", fake(clock, 0.01))
    C.choose([fast, C.Candidate("torch", "fp32", fake(clock, 0.1))], {"k": 4}, frames_and_reference, 1.0, clock)

    def gone():
        raise ImportError("onnxruntime uninstalled")

    _, record = C.choose([C.Candidate("onnx", "fp32", gone), C.Candidate("torch", "fp32", fake(clock, 0.1))],
                         {"k": 4}, frames_and_reference, 1.0, clock)
    assert not record["cached"] and record["chosen"] == "torch fp32"


def test_no_accurate_candidate_is_an_error(cache):
    clock = Clock()
    with pytest.raises(SelfeeError, match="no backend gave embeddings within the accuracy limit: onnx int8"):
        C.choose([C.Candidate("onnx", "int8", fake(clock, 0.01, noise=True))], {"k": 5}, frames_and_reference,
                 1.0, clock)


# --------------------------------------------------------------------------------------------- real, on the CPU


def test_auto_on_the_cpu_times_the_real_backends_and_records_them(tiny, clip, tmp_path, monkeypatch):
    monkeypatch.setattr(C, "SECONDS", 0.2)
    monkeypatch.setenv("SELFEE_CACHE", str(tmp_path / "cache"))  # no choice cached by an earlier test
    out = tmp_path / "emb"
    manifest = embed_videos([clip], tiny[0], out, batch_size=8, device="cpu", open_embedder=open_embedder,
                            show_progress=False)
    sel = manifest["backend_selection"]
    labels = {f"{r['backend']} {r['precision']}" for r in sel["table"]}
    assert {"torch fp32", "torch bf16", "torchscript fp32", "onnx fp32"} <= labels
    chosen = next(r for r in sel["table"] if f"{r['backend']} {r['precision']}" == sel["chosen"])
    assert chosen["accurate"] and chosen["median_cosine"] >= 0.99 and chosen["fps"] > 0
    assert chosen["fps"] == max(r["fps"] for r in sel["table"] if r.get("accurate"))
    assert manifest["backend"] == chosen["backend"] and manifest["precision"] == chosen["precision"]
    assert not sel["cached"]
    again, _ = open_embedder(tiny[0], "auto", "cpu", videos=[clip])
    assert again.selection["cached"] and again.selection["chosen"] == sel["chosen"]


def test_precision_limits_the_candidates_and_forces_the_torch_autocast(tiny, clip):
    emb, _ = open_embedder(tiny[0], "torch", "cpu", precision="bf16")
    assert emb.name == "torch" and emb.precision == "bf16" and emb.amp == torch.bfloat16
    model = tiny[1]
    assert {c.label for c in candidates(tiny[0], model, torch.device("cpu"), [clip], "bf16")} == {"torch bf16"}
    with pytest.raises(SelfeeError, match="unknown precision 'int4'"):
        open_embedder(tiny[0], "auto", "cpu", precision="int4")


def test_a_requested_backend_that_cannot_run_falls_back_out_loud(tiny, caplog, monkeypatch):
    monkeypatch.delenv("SELFEE_STRICT", raising=False)
    with caplog.at_level(logging.WARNING, logger="selfee"):
        emb, _ = open_embedder(tiny[0], "onnx", "cpu", precision="int8")
    assert emb.name == "torch" and emb.precision == "fp32" and emb.fallback["wanted"] == "the onnx int8 backend"
    assert "no INT8 export of tiny.pt" in caplog.text and "using torch fp32" in caplog.text
    monkeypatch.setenv("SELFEE_STRICT", "1")
    with pytest.raises(FallbackError, match="strict mode forbids"):
        open_embedder(tiny[0], "onnx", "cpu", precision="int8")


def test_an_int8_export_beside_the_checkpoint_is_a_candidate(tiny, tmp_path):
    import shutil

    ckpt = tmp_path / "w.pt"
    shutil.copy(tiny[0], ckpt)
    assert find_export(ckpt, ".int8.onnx") is None
    (tmp_path / "w.int8.onnx").write_bytes(b"x")
    (tmp_path / "w.int8.onnx.json").write_text(json.dumps({"checkpoint_sha256": "0" * 64}))
    assert find_export(ckpt, ".int8.onnx") is None  # another checkpoint's
    from selfee.fileio import file_sha256

    (tmp_path / "w.int8.onnx.json").write_text(json.dumps({"checkpoint_sha256": file_sha256(ckpt)}))
    assert find_export(ckpt, ".int8.onnx") == tmp_path / "w.int8.onnx"
    labels = {c.label for c in candidates(ckpt, tiny[1], torch.device("cpu"), [])}
    assert "onnx int8" in labels
