"""INT8 exports: ONNX Runtime static quantization (QDQ, per-channel weights), calibrated and accepted on real frames.

``selfee-fast export CKPT --precision int8 --calibrate VIDEOS`` draws live frames from the videos
through ``embed``'s own frame source, splits them into calibration frames and held-back frames
(alternate samples, so neither set sees the other's frames), calibrates activation ranges on the
first, and accepts the quantized model only if, against the fp32 eager encoder,

- the median cosine similarity of the held-back frames' embeddings is >= :data:`MIN_MEDIAN_COSINE`, and
- a k-NN on a labelled video (the demo's generated behaviour video, or one given with its labels)
  loses at most :data:`MAX_F1_LOSS` macro F1 (leave-one-block-out, :func:`knn_macro_f1`).

Both figures go into the export's metadata (``int8_checks``); a failed check is an error and the file
is not kept. The same checks accept a TensorRT INT8 engine built from the QDQ model.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from selfee._deps import require
from selfee.errors import SelfeeError
from selfee.export.verify import cosine_rows, eager_reference, real_frames

log = logging.getLogger("selfee")

MIN_MEDIAN_COSINE = 0.99
MAX_F1_LOSS = 0.02
KNN_FRAMES = 300  # frames of the demo video the k-NN check embeds (twice: fp32 and int8)


def calibration_sets(cfg, videos, calibrate: int = 64, held_back: int = 32, stride: int = 4):
    """(calibration frames, held-back frames, description): live frames of ``videos`` as ``embed`` makes them.

    Frames are sampled every ``stride`` frames; the held-back ones are every k-th sample (k set by the
    ratio), the others calibrate, so the two sets never share a frame.
    """
    total = calibrate + held_back
    frames, used = real_frames(cfg, videos, total, stride)
    if frames is None or len(frames) < 4:
        raise SelfeeError("INT8 calibration needs real frames, and none could be read from "
                          f"{', '.join(map(str, videos)) or 'no videos'} (--calibrate VIDEO ...)")
    every = max(2, round(len(frames) / max(1, held_back * len(frames) / total)))
    held = torch.zeros(len(frames), dtype=torch.bool)
    held[every - 1 :: every] = True
    return frames[~held], frames[held], f"{int((~held).sum())} calibration and {int(held.sum())} held-back " \
                                        f"real frames from {', '.join(used)}"


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, frames: torch.Tensor, batch: int = 8,
                  meta: dict | None = None) -> Path:
    """Quantize the fp32 export ``src`` into ``dst``: QDQ, int8 per-channel weights, uint8 activations
    (the u8s8 kernels of x86 VNNI), ranges calibrated (min/max) on ``frames`` (uint8 live frames)."""
    require("onnx", "INT8 quantization")
    require("onnxruntime", "INT8 quantization")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from selfee.export.graph import INPUT

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{INPUT: frames[i : i + batch].contiguous().numpy()}
                                 for i in range(0, len(frames), batch)])

        def get_next(self):
            return next(self.batches, None)

    dst = Path(dst).resolve()
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="selfee-quant-") as tmp:
        src = _inline_identities(Path(src).resolve(), Path(tmp) / "fp32.onnx")
        os.chdir(tmp)  # some ONNX Runtime versions write their augmented model into the working directory
        quiet = _Quiet()  # ONNX Runtime's quantizer logs every skipped tensor on the root logger
        try:
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=["Conv", "Gemm", "MatMul"])
        finally:
            quiet.close()
            os.chdir(cwd)
    if meta is not None:
        set_meta(dst, meta)
    return dst


class _Quiet:
    """Raise the root logger's level to ERROR until closed."""

    def __init__(self):
        self.root = logging.getLogger()
        self.level = self.root.level
        self.root.setLevel(logging.ERROR)

    def close(self) -> None:
        self.root.setLevel(self.level)


def _inline_identities(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose Identity nodes of initializers (the exporter's de-duplicated equal weights, such
    as the zero biases of an untrained model) are replaced by copies of the initializers: the quantizer
    quantizes a Conv's bias only when it is an initializer."""
    onnx = require("onnx", "INT8 quantization")
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    onnx.save(model, str(dst))
    return dst


def set_meta(path: str | os.PathLike, meta: dict) -> None:
    """Replace the selfee metadata stored in the ONNX model at ``path``."""
    onnx = require("onnx", "INT8 export metadata")
    from selfee.export.onnx import set_metadata

    model = onnx.load(str(path))
    set_metadata(model, meta)
    onnx.save(model, str(path))


def knn_macro_f1(x: np.ndarray, y: np.ndarray, k: int = 5, blocks: int = 10) -> float:
    """Macro F1 of the project's cosine k-NN (:mod:`selfee.analysis.classify`, per frame, no smoothing),
    leave-one-block-out over ``blocks`` contiguous time blocks (neighbouring frames never vote for each other)."""
    from selfee.analysis.classify import KnnOptions, knn_scores, metrics

    opts = KnnOptions(k=k, smooth="none", device="cpu")
    n_classes = int(y.max()) + 1
    edges = np.linspace(0, len(y), blocks + 1).astype(int)
    pred = np.empty_like(y)
    scores = np.zeros((len(y), n_classes))
    for a, b in zip(edges[:-1], edges[1:]):
        ref = np.r_[0:a, b : len(y)]
        scores[a:b] = knn_scores(x[a:b], [x[ref]], y[ref], n_classes, opts)
        pred[a:b] = scores[a:b].argmax(1)
    return metrics(y, pred, scores, n_classes)["macro_f1"]


def knn_check(encoder: torch.nn.Module, run: Callable[[torch.Tensor], np.ndarray], cfg, video, labels,
              frames: int = KNN_FRAMES, batch: int = 16) -> dict:
    """Macro F1 of a k-NN (:func:`knn_macro_f1`) on a labelled video's embeddings, fp32 eager vs ``run``.

    ``labels``: a label file for ``video`` (``frame,label`` CSV or ``start end label`` ranges). The CLI
    passes the demo's generated behaviour video (its labels known by construction) unless given one.
    """
    from selfee.analysis.io import read_labels
    from selfee.data import make_sources
    from selfee.embed.source import iter_embed_batches
    from selfee.video import probe

    if video is None or labels is None:
        raise SelfeeError("the INT8 k-NN check needs a labelled video and its labels (--knn-video V --knn-labels L; "
                          "the command line generates the demo's behaviour video when none is given)")
    fl = read_labels(labels)
    classes = {c: i for i, c in enumerate(sorted(set(fl.labels.tolist())))}
    label_of = {int(f): classes[c] for f, c in zip(fl.frames, fl.labels)}
    (src,) = make_sources([probe(video)], cfg)
    x, idx = [], []
    for b in iter_embed_batches(src, cfg, 64):
        keep = [i for i, f in enumerate(b.frame.tolist()) if f in label_of]
        if keep:
            x.append(b.frames[keep])
            idx.extend(int(b.frame[i]) for i in keep)
        if len(idx) >= frames:
            break
    if not x:
        raise SelfeeError(f"{video}: no labelled frame for the k-NN check")
    x = torch.cat(x)[:frames]
    y = np.array([label_of[f] for f in idx[:frames]])
    if len(np.unique(y)) < 2:
        raise SelfeeError(f"{video}: the k-NN check needs at least two labelled classes in its first {frames} frames")
    ref = eager_reference(encoder, x)
    got = np.concatenate([np.asarray(run(x[i : i + batch]), np.float32) for i in range(0, len(x), batch)])
    f32, q = knn_macro_f1(ref, y), knn_macro_f1(got, y)
    return {"video": Path(video).name, "frames": int(len(y)), "macro_f1_fp32": f32, "macro_f1": q,
            "f1_loss": f32 - q}


def int8_checks(encoder: torch.nn.Module, run: Callable[[torch.Tensor], np.ndarray], held: torch.Tensor, cfg,
                knn_video=None, knn_labels=None, knn_frames: int = KNN_FRAMES, batch: int = 16) -> dict:
    """The acceptance figures of an INT8 export (``run``) against the fp32 eager encoder; ``passed`` says."""
    ref = eager_reference(encoder, held)
    got = np.concatenate([np.asarray(run(held[i : i + batch]), np.float32) for i in range(0, len(held), batch)])
    cos = cosine_rows(ref, got)
    knn = knn_check(encoder, run, cfg, knn_video, knn_labels, knn_frames, batch)
    checks = {
        "held_back_frames": int(len(held)),
        "median_cosine": float(np.median(cos)),
        "min_cosine": float(cos.min()),
        "min_median_cosine": MIN_MEDIAN_COSINE,
        "knn": knn,
        "max_f1_loss": MAX_F1_LOSS,
    }
    checks["passed"] = bool(checks["median_cosine"] >= MIN_MEDIAN_COSINE and knn["f1_loss"] <= MAX_F1_LOSS)
    return checks


def describe_checks(checks: dict, what: str = "int8") -> str:
    k = checks["knn"]
    ok = "ok" if checks["passed"] else "FAILED"
    return (f"  {what} vs eager fp32 on {checks['held_back_frames']} held-back real frames: median cosine "
            f"{checks['median_cosine']:.4f} (need >= {checks['min_median_cosine']}), min {checks['min_cosine']:.4f}; "
            f"k-NN macro F1 on {k['frames']} frames of {k['video']}: {k['macro_f1']:.3f} vs fp32 "
            f"{k['macro_f1_fp32']:.3f} (loss {k['f1_loss']:+.3f}, allowed {checks['max_f1_loss']}) [{ok}]")


def require_checks(checks: dict, path, what: str = "INT8") -> None:
    if checks["passed"]:
        return
    why = []
    if checks["median_cosine"] < checks["min_median_cosine"]:
        why.append(f"median cosine to fp32 {checks['median_cosine']:.4f} < {checks['min_median_cosine']}")
    if checks["knn"]["f1_loss"] > checks["max_f1_loss"]:
        why.append(f"k-NN macro F1 loss {checks['knn']['f1_loss']:.3f} > {checks['max_f1_loss']}")
    raise SelfeeError(f"{path}: the {what} export fails its acceptance check ({'; '.join(why)}); the file was not "
                      "kept (calibrate on more or more typical videos, or use fp32/bf16)")
