"""Export round trips on CPU: TorchScript and ONNX (through ONNX Runtime) match eager; metadata; failures."""

import json

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from conftest import numbered_frames, write_video
from selfee._deps import available
from selfee.cli import app
from selfee.errors import SelfeeError
from selfee.export.exporter import check_options, export_checkpoint, verification_sets
from selfee.export.graph import random_frames
from selfee.export.open import open_embedder
from selfee.export.verify import cosine_rows

from .conftest import CFG, cosine_min

runner = CliRunner()


def eager(model, frames: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.encoder(frames.float() / 255).numpy()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_round_trip_matches_eager_and_carries_the_config(tiny, exports, fmt):
    path, model = tiny
    embedder, cfg = open_embedder(exports[fmt], device="cpu")  # backend from the suffix
    assert embedder.name == fmt and embedder.dim == 16
    for n in (1, 7):  # any batch size
        x = random_frames(n, (32, 48), seed=n)
        got = embedder(x)
        ref = eager(model, x)
        assert got.shape == (n, 16) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
        assert cosine_min(got, ref) >= 0.9999
    assert cfg.data == CFG.data and cfg.model == CFG.model  # input size, live frames, frame interval, ...
    from selfee.fileio import file_sha256

    assert embedder.meta["checkpoint_sha256"] == file_sha256(path)
    sidecar = json.loads(open(exports[fmt] + ".json").read())
    assert sidecar["verification"]["passed"] and set(sidecar["verification"]["sets"]) == {"random", "video-like"}


def test_onnx_file_has_opset_names_dynamic_batch_and_metadata(exports):
    m = onnx.load(exports["onnx"])
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,) = m.graph.input
    (out,) = m.graph.output
    assert (inp.name, out.name) == ("frames", "embedding")
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == 3
    props = {p.key: p.value for p in m.metadata_props}
    assert json.loads(props["selfee.input_size"]) == [32, 48]
    assert json.loads(props["selfee.live_frames"]) is True and json.loads(props["selfee.frame_interval"]) == 2
    assert len(json.loads(props["selfee.checkpoint_sha256"])) == 64
    assert json.loads(props["selfee"])["config"]["data"]["input_size"] == [32, 48]


def test_reduced_precision_torchscript_passes_the_looser_threshold(tiny, tmp_path):
    report = export_checkpoint(tiny[0], tmp_path, fmt="torchscript", precision="bf16", frames=4, quiet=True)
    (result,) = report["verification"]
    assert result["threshold"] == 0.999 and result["passed"]
    embedder, _ = open_embedder(report["files"][0], device="cpu")
    x = random_frames(5, (32, 48), seed=3)
    assert cosine_min(embedder(x), eager(tiny[1], x)) >= 0.999


def test_a_wrong_export_is_rejected_and_not_kept(tiny, tmp_path, monkeypatch):
    from selfee.export import graph

    original = graph.FrameEncoder.forward
    monkeypatch.setattr(graph.FrameEncoder, "forward", lambda self, frames: -original(self, frames))
    with pytest.raises(SelfeeError, match="verification failed"):
        export_checkpoint(tiny[0], tmp_path, fmt="onnx", frames=4, quiet=True)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*partial*"))


def test_real_frames_verify_the_export(tiny, exports, tmp_path):
    from selfee.export.verify import verify_export

    video = write_video(tmp_path / "v.mp4", numbered_frames(40))
    inputs, _ = verification_sets(CFG, 6, [video])
    assert set(inputs) == {"random", "real"} and inputs["real"].shape == (6, 3, 32, 48)
    embedder, _ = open_embedder(exports["onnx"], device="cpu")
    result = verify_export("onnx", embedder, tiny[1].encoder, inputs, "fp32")
    assert result["passed"] and result["sets"]["real"]["min_cosine"] >= 0.9999


@pytest.mark.parametrize("args, message", [
    (("torchscript", True, "fp32", 8, None), "use --format onnx --trt"),
    (("onnx", False, "fp16", 8, None), "ONNX files are written in fp32"),
    (("onnx", False, "fp8", 8, None), "unknown precision"),
    (("onnx", True, "fp16", 8, 16), "opt-batch"),
    (("tflite", False, "fp32", 8, None), "unknown export format"),
])
def test_bad_options_are_refused(args, message):
    with pytest.raises(SelfeeError, match=message):
        check_options(*args)


@pytest.mark.skipif(available("tensorrt") and torch.cuda.is_available(), reason="TensorRT and a GPU are present")
def test_trt_without_tensorrt_or_gpu_says_what_is_needed(tiny, tmp_path):
    r = runner.invoke(app, ["export", str(tiny[0]), "--out", str(tmp_path), "--trt", "--precision", "fp16"])
    assert r.exit_code == 2
    line = r.output.strip()
    assert line.startswith("error:") and len(line.splitlines()) == 1
    assert ("pip install tensorrt" in line) or ("GPU" in line)
    assert not list(tmp_path.iterdir())  # failed before any work


def test_cli_export_prints_the_verification(tiny, tmp_path):
    r = runner.invoke(app, ["export", str(tiny[0]), "--out", str(tmp_path), "--format", "torchscript",
                            "--frames", "4", "--name", "enc"])
    assert r.exit_code == 0, r.output
    assert "torchscript (fp32) vs eager fp32 on 4 random frames: cosine min" in r.output and "[ok]" in r.output
    assert (tmp_path / "enc.ts").is_file() and (tmp_path / "enc.ts.json").is_file()
    # without --video the output says that the frames standing in for real ones were synthetic
    assert "verified on 4 random frames and 4 synthetic video-like frames (no video given; not real frames)" in r.output
    assert "note: the frames standing in for real ones were synthetic; pass --video" in r.output


def test_cli_export_with_a_video_says_which_real_frames(tiny, tmp_path):
    video = write_video(tmp_path / "v.mp4", numbered_frames(40))
    r = runner.invoke(app, ["export", str(tiny[0]), "--out", str(tmp_path / "x"), "--format", "torchscript",
                            "--frames", "4", "--video", str(video)])
    assert r.exit_code == 0, r.output
    assert "verified on 4 random frames and 4 real frames from v.mp4" in r.output and "synthetic" not in r.output
    assert "4 real frames: cosine min" in r.output


def test_embed_verifies_a_new_cached_export_on_the_first_video(tiny, tmp_path, monkeypatch, caplog):
    import logging

    from selfee.embed import embed_videos

    monkeypatch.setenv("SELFEE_CACHE", str(tmp_path / "cache"))  # a fresh cache: the export is made here
    videos = [write_video(tmp_path / f"{n}.mp4", numbered_frames(40)) for n in ("first", "second")]
    with caplog.at_level(logging.INFO, logger="selfee"):
        m = embed_videos(videos, tiny[0], tmp_path / "emb", backend="onnx", device="cpu", batch_size=8,
                         show_progress=False, open_embedder=open_embedder)
    assert m["backend"] == "onnx" and not m["failed"]
    assert "verified the cached onnx export on 8 random frames and 8 real frames from first.mp4" in caplog.text
    (sidecar,) = (tmp_path / "cache" / "exports").glob("*.onnx.json")
    assert set(json.loads(sidecar.read_text())["verification"]["sets"]) == {"random", "real"}


# Two processes (ranks exporting into the cache) export the same checkpoint into one folder at the same
# moment: each waits for the other just before writing its ONNX file, so that temporary files with a fixed
# name would collide.
CONCURRENT = """
import os, pathlib, sys, time
import selfee.export.onnx as O
original = O.to_onnx
def together(*args, **kwargs):
    room = pathlib.Path(sys.argv[2])
    (room / f"ready-{os.getpid()}").touch()
    t0 = time.time()
    while len(list(room.glob("ready-*"))) < 2 and time.time() - t0 < 120:
        time.sleep(0.05)
    return original(*args, **kwargs)
O.to_onnx = together
from selfee.export.exporter import export_checkpoint
print(export_checkpoint(sys.argv[1], sys.argv[3], fmt="onnx", name="same", frames=4, quiet=True)["files"][0])
"""


@pytest.mark.slow
def test_two_processes_exporting_the_same_checkpoint_at_once(tiny, tmp_path):
    import os
    import subprocess
    import sys

    folder, room = tmp_path / "exports", tmp_path / "room"
    room.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tiny[0]), str(room), str(folder)], env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    assert len(list(room.iterdir())) == 2  # both reached the write together
    (path,) = {out.strip().splitlines()[-1] for out, _ in outs}
    assert sorted(f.name for f in folder.iterdir()) == ["same.onnx", "same.onnx.json"]  # no temporary files left
    embedder, _ = open_embedder(path, device="cpu")
    x = random_frames(3, (32, 48), seed=9)
    assert cosine_min(embedder(x), eager(tiny[1], x)) >= 0.9999


def test_cached_export_takes_the_file_another_process_finished_first(tiny, tmp_path, monkeypatch):
    from selfee.export import exporter

    monkeypatch.setenv("SELFEE_CACHE", str(tmp_path))

    def raced(checkpoint, folder, fmt, name, **kwargs):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.onnx").write_bytes(b"theirs")  # the other process renamed its verified file first
        raise FileNotFoundError("our temporary file is gone")

    monkeypatch.setattr(exporter, "export_checkpoint", raced)
    assert exporter.cached_export(tiny[0], "onnx").read_bytes() == b"theirs"


def test_cosine_rows_reference():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    b = np.array([[2.0, 0.0], [1.0, -1.0], [0.0, -1.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [1.0, 0.0, -1.0], atol=1e-12)


def test_onnx_runtime_gpu_path_queues_batches_on_a_worker_in_order(exports, monkeypatch):
    """The submit() contract of the ONNX Runtime CUDA path (its worker thread, order, errors); the CUDA work
    inside _run_cuda needs a GPU and is replaced here by the CPU session."""
    import threading
    import time

    from selfee.export.runtime import OnnxEmbedder

    cpu = OnnxEmbedder(exports["onnx"], "cpu")
    emb = OnnxEmbedder(exports["onnx"], "cpu")
    emb.device = torch.device("cuda", 0)
    threads = []

    def run(frames):
        threads.append(threading.current_thread().name)
        time.sleep(0.02 * (len(frames) % 3))  # uneven durations: the order must still be kept
        if len(frames) == 4:
            raise RuntimeError("CUDA failure")
        return cpu(frames)

    monkeypatch.setattr(emb, "_run_cuda", run)
    xs = [random_frames(n, (32, 48), seed=n) for n in (5, 3, 7)]
    pending = [emb.submit(x) for x in xs]  # all queued before any is read back
    for p, x in zip(pending, xs):
        np.testing.assert_allclose(p.result(), cpu(x), rtol=1e-6)
    assert len(threads) == 3 and all(t.startswith("selfee-onnx") for t in threads)
    with pytest.raises(RuntimeError, match="CUDA failure"):
        emb(random_frames(4, (32, 48)))
