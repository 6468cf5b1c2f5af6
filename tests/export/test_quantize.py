"""INT8 exports: ONNX Runtime static quantization (QDQ, per-channel), its acceptance checks, refusals, the CLI.

The tiny test model (ResNet-18, 16-d, 32 x 48, untrained) is not one INT8 keeps at the real thresholds
(its embeddings are nearly parallel, so k-NN neighbours flip on quantization noise): the tests of what
is written lower the thresholds (LOOSE), and the refusal tests use the real ones. Whether a real model
passes is measured by bench/embed_backends.py (ResNet-50, 2048-d, 256 x 192).
"""

import json

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from conftest import numbered_frames, write_video
from selfee.cli import app
from selfee.errors import SelfeeError
from selfee.export import quantize as Q
from selfee.export.exporter import check_options, export_checkpoint
from selfee.export.runtime import OnnxEmbedder
from selfee.export.verify import cosine_rows

from .conftest import CFG

pytest.importorskip("onnxruntime")
runner = CliRunner()
KNN = 90  # frames of the demo video in the k-NN check (tiny model, 2 cores)


@pytest.fixture(scope="module")
def calib_video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("calib") / "calib.mp4", numbered_frames(120), g=8)


@pytest.fixture
def loose(monkeypatch):
    monkeypatch.setattr(Q, "MIN_MEDIAN_COSINE", 0.9)
    monkeypatch.setattr(Q, "MAX_F1_LOSS", 1.0)


@pytest.fixture(scope="module")
def knn(tmp_path_factory):
    """The demo's generated behaviour video and its labels (what the command line uses by default)."""
    from selfee.cli.export import demo_labelled_video

    return demo_labelled_video(tmp_path_factory.mktemp("knn"), KNN)


@pytest.fixture(scope="module")
def int8(tiny, calib_video, knn, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Q, "MIN_MEDIAN_COSINE", 0.9)
        mp.setattr(Q, "MAX_F1_LOSS", 1.0)
        return out, export_checkpoint(tiny[0], out, precision="int8", calibrate=[calib_video], frames=4,
                                      quiet=True, knn_frames=KNN, knn_video=knn[0], knn_labels=knn[1])


def test_int8_export_is_qdq_per_channel_and_close_to_eager(tiny, int8, calib_video):
    out, report = int8
    path = out / "tiny.int8.onnx"
    assert str(path) in report["files"] and (out / "tiny.onnx").is_file()  # the fp32 export stays beside it
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and "DequantizeLinear" in ops
    inits = {i.name: i for i in model.graph.initializer}
    conv_weight_scales = [inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear"
                          and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8
                          and len(inits[n.input[0]].dims) == 4]
    assert conv_weight_scales and all(len(s.dims) == 1 and s.dims[0] > 1 for s in conv_weight_scales)  # per channel
    # independently of the export's own figures: frames of the video, int8 vs the eager model
    from selfee.export.verify import real_frames

    frames, _ = real_frames(CFG, [calib_video], 24, stride=3)
    with torch.no_grad():
        ref = tiny[1].encoder(frames.float() / 255).numpy()
    got = OnnxEmbedder(path, "cpu")(frames)
    assert np.median(cosine_rows(ref, got)) >= 0.9
    assert not np.allclose(ref, got, atol=1e-6)  # it is quantized, not the fp32 graph


def test_int8_checks_are_stored_and_reported(int8):
    out, report = int8
    meta = json.loads((out / "tiny.int8.onnx.json").read_text())
    checks = meta["int8_checks"]
    assert meta["precision"] == "int8" and meta["quantization"]["format"] == "QDQ"
    assert checks["passed"] and checks["median_cosine"] >= 0.9 and checks["knn"]["frames"] == KNN
    assert checks["min_median_cosine"] == 0.9 and checks["held_back_frames"] >= 4
    assert checks["knn"]["f1_loss"] == pytest.approx(checks["knn"]["macro_f1_fp32"] - checks["knn"]["macro_f1"])
    stored = json.loads(OnnxEmbedder(out / "tiny.int8.onnx", "cpu").session.get_modelmeta()
                        .custom_metadata_map["selfee"])
    assert stored["int8_checks"]["median_cosine"] == checks["median_cosine"]
    assert report["int8_checks"][0]["median_cosine"] == checks["median_cosine"]


def test_knn_check_against_references(tiny, knn):
    """Eager against itself loses nothing; embeddings of pure noise lose most of the F1."""
    enc = tiny[1].encoder

    def same(x):
        with torch.no_grad():
            return enc(x.float() / 255).numpy()

    assert Q.knn_check(enc, same, CFG, *knn, frames=KNN)["f1_loss"] == 0.0
    rng = np.random.default_rng(0)
    noise = Q.knn_check(enc, lambda x: rng.normal(size=(len(x), 16)).astype(np.float32), CFG, *knn, frames=KNN)
    assert noise["macro_f1"] < noise["macro_f1_fp32"]


def test_knn_macro_f1_against_hand_made_cases():
    """Two well separated classes in alternating blocks: perfect; labels shuffled against the features: chance."""
    y = np.repeat(np.arange(10) % 2, 20)
    x = np.stack([np.where(y == 0, 1.0, -1.0), np.ones_like(y, float)], 1) + 0.01 * np.arange(200)[:, None] / 200
    assert Q.knn_macro_f1(x, y) == 1.0
    rng = np.random.default_rng(0)
    assert Q.knn_macro_f1(rng.normal(size=(200, 8)), y) < 0.8


def test_knn_check_needs_labels(tiny, knn):
    with pytest.raises(SelfeeError, match="needs a labelled video and its labels"):
        Q.knn_check(tiny[1].encoder, None, CFG, knn[0], None)


@pytest.mark.parametrize("knob, value, why", [("MIN_MEDIAN_COSINE", 1.0 + 1e-9, "median cosine"),
                                              ("MAX_F1_LOSS", -1.0, "k-NN macro F1 loss")])
def test_a_failed_check_refuses_the_export(tiny, calib_video, knn, tmp_path, monkeypatch, knob, value, why):
    monkeypatch.setattr(Q, "MIN_MEDIAN_COSINE", 0.0)
    monkeypatch.setattr(Q, "MAX_F1_LOSS", 1.0)
    monkeypatch.setattr(Q, knob, value)
    with pytest.raises(SelfeeError, match=f"fails its acceptance check \\({why}.*the file was not kept"):
        export_checkpoint(tiny[0], tmp_path, precision="int8", calibrate=[calib_video], frames=4, quiet=True,
                          knn_frames=KNN, knn_video=knn[0], knn_labels=knn[1])
    assert not list(tmp_path.glob("*.int8.onnx*"))


def test_the_untrained_tiny_model_is_refused_at_the_real_thresholds(tiny, calib_video, tmp_path):
    r = runner.invoke(app, ["export", str(tiny[0]), "--out", str(tmp_path), "--precision", "int8", "--frames", "4",
                            "--calibrate", str(calib_video), "--knn-frames", "150"])
    assert r.exit_code == 2 and "fails its acceptance check" in r.output and "k-NN macro F1 loss" in r.output
    assert not (tmp_path / "tiny.int8.onnx").exists()


def test_int8_options():
    with pytest.raises(SelfeeError, match="needs calibration videos"):
        check_options("onnx", False, "int8", 8, None)
    with pytest.raises(SelfeeError, match="use --format onnx"):
        check_options("torchscript", False, "int8", 8, None, calibrate=["v.mp4"])
    check_options("onnx", True, "int8", 8, None, calibrate=["v.mp4"])


def test_calibration_and_held_back_frames_do_not_overlap(calib_video, tmp_path):
    calib, held, text = Q.calibration_sets(CFG, [calib_video], calibrate=12, held_back=6, stride=2)
    assert len(calib) + len(held) == 18 and len(held) >= 4 and "held-back real frames from calib.mp4" in text
    flat = lambda t: {bytes(f.numpy().tobytes()) for f in t}  # noqa: E731
    assert not flat(calib) & flat(held)
    (tmp_path / "bad.mp4").write_text("not a video")
    with pytest.raises(SelfeeError, match="needs real frames"):
        Q.calibration_sets(CFG, [tmp_path / "bad.mp4"], 4, 2)


def test_cli_int8_export_prints_both_figures(tiny, calib_video, tmp_path, loose):
    r = runner.invoke(app, ["export", str(tiny[0]), "--out", str(tmp_path), "--precision", "int8", "--frames", "4",
                            "--calibrate", str(calib_video), "--knn-frames", str(KNN)])
    assert r.exit_code == 0, r.output
    assert "INT8 calibrated on" in r.output and "median cosine" in r.output and "k-NN macro F1" in r.output
    assert f"wrote {tmp_path / 'tiny.int8.onnx'}" in r.output
