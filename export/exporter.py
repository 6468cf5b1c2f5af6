"""``selfee-fast export``: checkpoint -> TorchScript or ONNX (-> TensorRT engine), each verified against eager.

A chain of converters, each ``(model or file, example, out) -> path``: the encoder is traced
to TorchScript or exported to ONNX, and a TensorRT engine is built from the ONNX file. Every
file is written under a temporary name, run on random frames and on real (or video-like) frames
next to the eager fp32 encoder, and renamed into place only when the cosine similarity of every
embedding is at least 0.9999 (fp32) or 0.999 (fp16/bf16).
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
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
from selfee.export.verify import describe, require_passed, verify_export

log = logging.getLogger("selfee")

FORMATS = ("torchscript", "onnx")


def check_options(fmt: str, trt: bool, precision: str, max_batch: int, opt_batch: int | None) -> None:
    if fmt not in FORMATS:
        raise SelfeeError(f"unknown export format '{fmt}' (choose from: {', '.join(FORMATS)})")
    precision_dtype(precision)
    if trt and fmt != "onnx":
        raise SelfeeError("--trt builds the engine from the ONNX export: use --format onnx --trt")
    if fmt == "onnx" and precision != "fp32" and not trt:
        raise SelfeeError(
            f"ONNX files are written in fp32; --precision {precision} applies to TorchScript and to "
            "TensorRT engines (--format onnx --trt)"
        )
    if max_batch < 1 or (opt_batch is not None and not 1 <= opt_batch <= max_batch):
        raise SelfeeError(f"batch sizes must satisfy 1 <= --opt-batch <= --max-batch (got {opt_batch}, {max_batch})")


def verification_frames(cfg, n: int, videos=(), seed: int = 0) -> dict[str, torch.Tensor]:
    """``random`` noise frames and ``real`` frames from ``videos`` (else ``video-like`` synthetic ones)."""
    return verification_sets(cfg, n, videos, seed)[0]


def verification_sets(cfg, n: int, videos=(), seed: int = 0) -> tuple[dict[str, torch.Tensor], str]:
    """(:func:`verification_frames`, a description of them: how many, and real from which videos or synthetic)."""
    size = tuple(int(v) for v in cfg.data.input_size)
    sets = {"random": random_frames(n, size, seed)}
    real, used = _real_frames(cfg, videos, n) if videos else (None, [])
    if real is not None:
        sets["real"] = real
        what = f"{len(real)} real frames from {', '.join(used)}"
    else:
        sets["video-like"] = structured_frames(n, size, seed + 1)
        why = "no frame could be read from the videos given" if videos else "no video given"
        what = f"{n} synthetic video-like frames ({why}; not real frames)"
    return sets, f"{n} random frames and {what}"


def real_frames(cfg, videos, n: int, stride: int = 5) -> torch.Tensor | None:
    """Up to ``n`` live frames (every ``stride``-th) from the start of each video, as ``embed`` makes them."""
    return _real_frames(cfg, videos, n, stride)[0]


def _real_frames(cfg, videos, n: int, stride: int = 5) -> tuple[torch.Tensor | None, list[str]]:
    from selfee.data import make_sources
    from selfee.embed import iter_embed_batches
    from selfee.video import expand_inputs, probe_many

    infos, bad = probe_many(expand_inputs(videos), min_frames=cfg.data.min_frames)
    for e in bad:
        log.warning("verification video skipped: %s", e)
    per = max(1, n // max(1, len(infos)))
    out, used = [], []
    for src in make_sources(infos, cfg):
        first = next(iter(iter_embed_batches(src, cfg, per * stride)), None)
        if first is not None:
            out.append(first.frames[::stride][:per])
            used.append(src.info.path.name)
    return (torch.cat(out)[:n], used) if out else (None, [])


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
) -> dict:
    """Export ``checkpoint``'s encoder into ``out_dir`` and verify every file; returns the report.

    Files: ``<name>.ts`` or ``<name>.onnx`` (+ ``<name>.engine`` with ``trt``), each with a
    ``<file>.json`` beside it (metadata and verification; the engine's is what loads it).
    """
    from selfee.checkpoint import file_sha256, load_model
    from selfee.export.runtime import OnnxEmbedder, TorchScriptEmbedder
    from selfee.train import resolve_device

    check_options(fmt, trt, precision, max_batch, opt_batch)
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

    def finish(tmp: Path, final: Path, result: dict, meta: dict) -> None:
        say("%s", describe(result))
        report["verification"].append(result)
        if not result["passed"]:
            tmp.unlink(missing_ok=True)
            require_passed(result, final)
        os.replace(tmp, final)
        sidecar = {**meta, "verification": result}
        _write_json(final.with_name(final.name + ".json"), sidecar)
        report["files"].append(str(final))

    if fmt == "torchscript":
        from selfee.export.torchscript import to_torchscript

        dev = resolve_device(device)
        meta = build_metadata(cfg, dim, precision, str(checkpoint), sha)
        final = out_dir / f"{name}.ts"
        tmp = _partial(final)
        with _removed_on_error(tmp):
            to_torchscript(encoder, example, tmp, meta, precision, dev)
            result = verify_export("torchscript", TorchScriptEmbedder(tmp, dev), encoder, inputs, precision)
            finish(tmp, final, result, meta)
        return report

    from selfee.export.onnx import to_onnx

    meta = build_metadata(cfg, dim, "fp32", str(checkpoint), sha, opset=opset)
    onnx_path = out_dir / f"{name}.onnx"
    tmp = _partial(onnx_path)
    with _removed_on_error(tmp):
        to_onnx(encoder, example, tmp, meta, opset)
        result = verify_export("onnx", OnnxEmbedder(tmp, "cpu"), encoder, inputs, "fp32")
        finish(tmp, onnx_path, result, meta)
    if trt:
        from selfee.export.tensorrt import TensorRTEmbedder, build_engine

        engine = out_dir / f"{name}.engine"
        tmp = _partial(engine)
        meta_trt = build_metadata(cfg, dim, precision, str(checkpoint), sha)
        with _removed_on_error(tmp):
            meta_trt = build_engine(onnx_path, tmp, meta_trt, precision, max_batch, opt_batch or max_batch,
                                    timing_cache, device=device)
            _write_json(tmp.with_name(tmp.name + ".json"), meta_trt)  # the runtime needs it to load the engine
            try:
                result = verify_export("tensorrt", TensorRTEmbedder(tmp, device), encoder, inputs, precision)
            finally:
                tmp.with_name(tmp.name + ".json").unlink(missing_ok=True)
            finish(tmp, engine, result, meta_trt)
    return report


@contextmanager
def _removed_on_error(tmp: Path):
    """Remove the temporary file when what writes or verifies it fails (no half-written leftovers)."""
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _partial(path: Path) -> Path:
    # Unique to this process and thread (ranks and processes may export the same checkpoint into the
    # same cache at once; each renames its own verified file into place), with the format's own
    # suffix last, so the tools that read it by suffix accept the temporary file.
    from selfee.embed import unique_suffix

    return path.with_name(f".{path.stem}.{unique_suffix()}.partial{path.suffix}")


def _write_json(path: Path, obj: dict) -> None:
    from selfee.embed import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


__all__ = ["FORMATS", "PRECISIONS", "export_checkpoint", "check_options"]
