"""``selfee-fast export``: checkpoint -> TorchScript or ONNX (-> TensorRT engine), each verified against eager.

A chain of converters, each ``(model or file, example, out) -> path``: the encoder is traced
to TorchScript or exported to ONNX, and a TensorRT engine is built from the ONNX file. Every
file is written under a temporary name, run on random frames and on real (or video-like) frames
next to the eager fp32 encoder, and renamed into place only when the cosine similarity of every
embedding is at least 0.9999 (fp32) or 0.999 (fp16/bf16). :func:`cached_export` exports a checkpoint
once, on demand, into the cache folder (``embed``'s CPU default).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from selfee.errors import SelfeeError
from selfee.export.graph import (
    PRECISIONS,
    build_metadata,
    embed_dim,
    precision_dtype,
    random_frames,
    structured_frames,
)
from selfee.export.verify import describe, real_frames, require_passed, verify_export
from selfee.fileio import atomic_path, atomic_write_json, cache_dir, file_sha256
from selfee.runtime import resolve_device

log = logging.getLogger("selfee")

FORMATS = ("torchscript", "onnx")


def check_options(fmt: str, trt: bool, precision: str, max_batch: int, opt_batch: int | None,
                  calibrate=()) -> None:
    if fmt not in FORMATS:
        raise SelfeeError(f"unknown export format '{fmt}' (choose from: {', '.join(FORMATS)})")
    if precision == "int8":
        if fmt != "onnx":
            raise SelfeeError("--precision int8 quantizes the ONNX export (and builds the TensorRT engine from it with "
                              "--trt): use --format onnx")
        if not calibrate:
            raise SelfeeError("--precision int8 needs calibration videos: --calibrate VIDEO (repeatable), videos "
                              "like the ones you will embed")
    else:
        precision_dtype(precision)
    if trt and fmt != "onnx":
        raise SelfeeError("--trt builds the engine from the ONNX export: use --format onnx --trt")
    if fmt == "onnx" and precision not in ("fp32", "int8") and not trt:
        raise SelfeeError(
            f"ONNX files are written in fp32; --precision {precision} applies to TorchScript and to "
            "TensorRT engines (--format onnx --trt)"
        )
    if max_batch < 1 or (opt_batch is not None and not 1 <= opt_batch <= max_batch):
        raise SelfeeError(f"batch sizes must satisfy 1 <= --opt-batch <= --max-batch (got {opt_batch}, {max_batch})")


def verification_sets(cfg, n: int, videos=(), seed: int = 0) -> tuple[dict[str, torch.Tensor], str]:
    """``random`` noise frames and ``real`` frames from ``videos`` (else ``video-like`` synthetic ones), and
    a description of them: how many, and real from which videos or synthetic."""
    size = tuple(int(v) for v in cfg.data.input_size)
    sets = {"random": random_frames(n, size, seed)}
    real, used = real_frames(cfg, videos, n) if videos else (None, [])
    if real is not None:
        sets["real"] = real
        what = f"{len(real)} real frames from {', '.join(used)}"
    else:
        sets["video-like"] = structured_frames(n, size, seed + 1)
        why = "no frame could be read from the videos given" if videos else "no video given"
        what = f"{n} synthetic video-like frames ({why}; not real frames)"
    return sets, f"{n} random frames and {what}"


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    fmt: str = "onnx",
    trt: bool = False,
    precision: str = "fp32",
    max_batch: int = 256,
    opt_batch: int | None = None,
    device: str = "auto",
    videos=(),
    frames: int = 16,
    timing_cache: str | os.PathLike | None = None,
    name: str | None = None,
    opset: int = 17,
    quiet: bool = False,
    calibrate=(),
    knn_video=None,
    knn_labels=None,
    knn_frames: int | None = None,
) -> dict:
    """Export ``checkpoint``'s encoder into ``out_dir`` and verify every file; returns the report.

    Files: ``<name>.ts`` or ``<name>.onnx`` (+ ``<name>.engine`` with ``trt``), each with a
    ``<file>.json`` beside it (metadata and verification; the engine's is what loads it).
    ``precision="int8"`` (ONNX) also writes ``<name>.int8.onnx``, quantized on frames of the
    ``calibrate`` videos and accepted by :func:`selfee.export.quantize.int8_checks` (k-NN on
    ``knn_video`` with its ``knn_labels`` file); with ``trt`` the engine is INT8,
    built from it.
    """
    from selfee.checkpoint import load_model
    from selfee.export.runtime import OnnxEmbedder, TorchScriptEmbedder

    check_options(fmt, trt, precision, max_batch, opt_batch, calibrate)
    if precision == "int8" and (knn_video is None or knn_labels is None):
        raise SelfeeError("--precision int8 needs a labelled video for its k-NN check (knn_video, knn_labels; "
                          "selfee-fast export generates the demo's when --knn-video is not given)")
    if trt:
        from selfee.export.tensorrt import check_available

        check_available()  # fail before any work when TensorRT or the GPU is missing
    model, cfg = load_model(checkpoint)
    encoder = model.encoder.eval()
    sha = file_sha256(checkpoint)
    dim = embed_dim(encoder)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or Path(checkpoint).stem
    inputs, described = verification_sets(cfg, frames, videos)
    example = inputs["random"][:2]
    say = log.debug if quiet else log.info
    say("verifying on %s", described)
    report = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha, "files": [], "verification": [],
              "verification_frames": described, "real_frames": "real" in inputs}

    def verified(result: dict, final: Path) -> None:
        """Record ``result``; the file is kept (renamed into place by the caller) only if it passed."""
        say("%s", describe(result))
        report["verification"].append(result)
        require_passed(result, final)

    def publish(final: Path, result: dict, meta: dict) -> None:
        atomic_write_json(final.with_name(final.name + ".json"), {**meta, "verification": result})
        report["files"].append(str(final))

    if fmt == "torchscript":
        from selfee.export.torchscript import to_torchscript

        dev = resolve_device(device)
        meta = build_metadata(cfg, dim, precision, str(checkpoint), sha)
        final = out_dir / f"{name}.ts"
        with atomic_path(final, keep_suffix=True) as tmp:
            to_torchscript(encoder, example, tmp, meta, precision, dev)
            result = verify_export("torchscript", TorchScriptEmbedder(tmp, dev), encoder, inputs, precision)
            verified(result, final)
        publish(final, result, meta)
        return report

    from selfee.export.onnx import to_onnx

    meta = build_metadata(cfg, dim, "fp32", str(checkpoint), sha, opset=opset)
    onnx_path = out_dir / f"{name}.onnx"
    with atomic_path(onnx_path, keep_suffix=True) as tmp:
        to_onnx(encoder, example, tmp, meta, opset)
        result = verify_export("onnx", OnnxEmbedder(tmp, "cpu"), encoder, inputs, "fp32")
        verified(result, onnx_path)
    publish(onnx_path, result, meta)
    if precision == "int8":
        onnx_path = _int8_onnx(report, encoder, cfg, meta, onnx_path, out_dir / f"{name}.int8.onnx", calibrate,
                               knn_video, knn_labels, knn_frames, say)
    if trt:
        from selfee.export.tensorrt import TensorRTEmbedder, build_engine

        engine = out_dir / f"{name}.engine"
        meta_trt = build_metadata(cfg, dim, precision, str(checkpoint), sha)
        with atomic_path(engine, keep_suffix=True) as tmp:
            meta_trt = build_engine(onnx_path, tmp, meta_trt, precision, max_batch, opt_batch or max_batch,
                                    timing_cache, device=device)
            sidecar = tmp.with_name(tmp.name + ".json")  # the runtime needs it to load the engine
            atomic_write_json(sidecar, meta_trt)
            try:
                if precision == "int8":
                    result = _int8_accept(report, "tensorrt int8", TensorRTEmbedder(tmp, device), encoder, cfg,
                                          report["int8_held_back"], knn_video, knn_labels, knn_frames, say, engine)
                    meta_trt["int8_checks"] = result
                else:
                    result = verify_export("tensorrt", TensorRTEmbedder(tmp, device), encoder, inputs, precision)
            finally:
                sidecar.unlink(missing_ok=True)
            if precision != "int8":
                verified(result, engine)
        publish(engine, result, meta_trt)
    report.pop("int8_held_back", None)
    return report


def _int8_accept(report, what, embedder, encoder, cfg, held, knn_video, knn_labels, knn_frames, say, path) -> dict:
    """The INT8 acceptance checks of ``embedder``: recorded in the report, printed, an error when failed."""
    from selfee.export.quantize import KNN_FRAMES, describe_checks, int8_checks, require_checks

    checks = int8_checks(encoder, embedder, held, cfg, knn_video, knn_labels, knn_frames or KNN_FRAMES)
    checks["export"] = what
    say("%s", describe_checks(checks, what))
    report["int8_checks"].append(checks)
    require_checks(checks, path, what)
    return checks


def _int8_onnx(report, encoder, cfg, meta, fp32_path: Path, out: Path, calibrate, knn_video, knn_labels, knn_frames,
               say) -> Path:
    """``out``: the fp32 ONNX export statically quantized (QDQ) on frames of ``calibrate``, kept only if accepted."""
    from selfee.export.quantize import calibration_sets, quantize_onnx, set_meta
    from selfee.export.runtime import OnnxEmbedder

    calib, held, described = calibration_sets(cfg, [str(v) for v in calibrate])
    say("INT8: %s", described)
    report.update(int8_calibration=described, int8_checks=[], int8_held_back=held)
    with atomic_path(out, keep_suffix=True) as tmp:
        quantize_onnx(fp32_path, tmp, calib)
        checks = _int8_accept(report, "onnx int8", OnnxEmbedder(tmp, "cpu"), encoder, cfg, held, knn_video,
                              knn_labels, knn_frames, say, out)
        meta = {**meta, "precision": "int8", "int8_checks": checks, "calibration": described,
                "quantization": {"format": "QDQ", "weights": "int8, per channel", "activations": "uint8",
                                 "calibration": "min-max", "source": fp32_path.name}}
        set_meta(tmp, meta)
    atomic_write_json(out.with_name(out.name + ".json"), {**meta, "verification": checks})
    report["files"].append(str(out))
    return out


# ---------------------------------------------------------------------------------------------
# Checkpoints exported on demand, once, into the cache
# ---------------------------------------------------------------------------------------------


def cached_export_path(checkpoint: str | os.PathLike, suffix: str) -> Path:
    """Where the cached export of ``checkpoint`` with ``suffix`` lives: ``<cache>/exports/<sha[:20]>-v<version><suffix>``."""
    from selfee import __version__

    return cache_dir() / "exports" / f"{file_sha256(checkpoint)[:20]}-v{__version__}{suffix}"


def cached_export(checkpoint: str | os.PathLike, backend: str, videos=()) -> Path:
    """The export of ``checkpoint`` for ``backend`` in the cache, made (and verified) on first use.

    The verification runs on random frames and on real frames of ``videos`` where given (``embed``
    passes the first video it is about to embed), else on synthetic video-like frames; the log
    says which. Processes or ranks exporting the same checkpoint at once each write their own
    temporary files and rename them into place (the last rename wins; both files are verified).
    """
    from selfee.export.runtime import SUFFIX

    if backend not in ("torchscript", "onnx"):
        raise SelfeeError(
            f"the {backend} backend needs an exported model: selfee-fast export {checkpoint} --out DIR --format onnx --trt"
        )
    path = cached_export_path(checkpoint, SUFFIX[backend])
    folder, name = path.parent, path.name.removesuffix(SUFFIX[backend])
    if path.is_file():
        return path
    log.info("exporting %s to %s once (cached in %s)", checkpoint, backend, folder)
    try:
        report = export_checkpoint(checkpoint, folder, fmt=backend, name=name, frames=8, videos=videos, quiet=True)
    except OSError:
        if path.is_file():  # another process finished the same export first
            log.info("%s: exported meanwhile by another process", path.name)
            return path
        raise
    log.info("verified the cached %s export on %s", backend, report["verification_frames"])
    return path


__all__ = ["FORMATS", "PRECISIONS", "cached_export", "check_options", "export_checkpoint"]
