"""Weights -> Embedder: the one place that decides which backend and precision run a checkpoint or an export.

``selfee-fast embed`` (and evaluate, demo, bench) open their Embedder here and hand it, or this
function, to :func:`selfee.embed.embed_videos`. An exported file runs in its own runtime. A
checkpoint with ``backend="auto"`` runs on the backend and precision measured fastest on this
machine among those accurate to fp32 (:mod:`selfee.export.choose`; torch fp32 and bf16 autocast,
TorchScript, ONNX Runtime fp32, ONNX Runtime INT8 where an INT8 export of the checkpoint is found,
TensorRT engines found beside it on a GPU), the choice cached per machine, weights and input size.
A backend or precision given explicitly is used, or, when it cannot be, replaced through
:func:`selfee.fallback.fallback` (an error in strict mode).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from selfee.config import SelfeeConfig
from selfee.embed.embedder import Embedder, TorchEmbedder
from selfee.errors import SelfeeError
from selfee.runtime import resolve_device

log = logging.getLogger("selfee")

_KINDS = {".pt": "torch", ".pth": "torch", ".pkl": "torch", ".ts": "torchscript", ".onnx": "onnx",
          ".engine": "tensorrt", ".plan": "tensorrt"}
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def backend_for(path: Path) -> str:
    """The backend a weights file is made for, from its suffix (a checkpoint, ``torch``, when unknown)."""
    return _KINDS.get(Path(path).suffix.lower(), "torch")


def open_embedder(weights: str | os.PathLike, backend: str = "auto", device: str = "auto",
                  videos=(), precision: str | None = None) -> tuple[Embedder, SelfeeConfig]:
    """(Embedder, SelfeeConfig of the weights) for a checkpoint or an exported model.

    An export runs in the backend of its file type (``.ts``: torchscript, ``.onnx``: onnx,
    ``.engine``/``.plan``: tensorrt). A checkpoint (``.pt``/``.pth``/``.pkl``) with ``auto`` runs on
    the fastest accurate backend measured on frames of ``videos`` (the first ones about to be
    embedded; synthetic video-like frames without them); ``precision`` (fp32, bf16, fp16, int8)
    limits the candidates to that precision. ``torch``, ``torchscript``, ``onnx`` force a backend
    (the exports made once into the cache). The Embedder carries ``precision`` and, when measured,
    ``selection`` (the timing table and the choice) for the manifest.
    """
    weights = Path(weights)
    if not weights.exists():
        raise SelfeeError(f"{weights}: weights file not found")
    if precision in (None, "", "auto"):
        precision = None
    elif precision not in PRECISIONS:
        raise SelfeeError(f"unknown precision '{precision}' (choose from: auto, {', '.join(PRECISIONS)})")
    kind = backend_for(weights)
    if kind != "torch":
        from selfee.export.runtime import load_exported

        if backend == "torch":
            raise SelfeeError(f"{weights}: the torch backend needs a checkpoint (.pt), not an exported {kind} model")
        embedder, cfg = load_exported(weights, kind if backend == "auto" else backend, device)
        embedder.precision = embedder.meta.get("precision", "fp32")
        return embedder, cfg
    from selfee.checkpoint import load_model

    model, cfg = load_model(weights)
    dev = resolve_device(device)
    if backend == "auto":
        return _auto(weights, model, cfg, dev, videos, precision), cfg
    return _forced(weights, model, cfg, backend, precision, dev, videos), cfg


def candidates(weights: Path, model, dev, videos, precision: str | None = None) -> list:
    """The backends worth timing for ``weights`` on ``dev`` (installed ones; the measurement drops those that fail)."""
    from selfee._deps import available
    from selfee.export.choose import Candidate

    out = []
    if dev.type == "cuda":
        out += [Candidate("torch", "bf16", lambda: _torch(model, dev, "bf16")),
                Candidate("torch", "fp32", lambda: _torch(model, dev, "fp32"))]
    else:
        out += [Candidate("torch", "fp32", lambda: _torch(model, dev, "fp32")),
                Candidate("torch", "bf16", lambda: _torch(model, dev, "bf16")),
                Candidate("torchscript", "fp32", lambda: _cached(weights, "torchscript", dev, videos))]
    if available("onnx") and available("onnxruntime"):
        if dev.type == "cpu" or _ort_has_cuda():
            out.append(Candidate("onnx", "fp32", lambda: _cached(weights, "onnx", dev, videos)))
        int8 = find_export(weights, ".int8.onnx")
        if int8 is not None:
            out.append(Candidate("onnx", "int8", lambda: _load(int8, "onnx", dev)))
    if dev.type == "cuda" and available("tensorrt"):
        for suffix, prec in ((".engine", "fp16"), (".int8.engine", "int8")):
            engine = find_export(weights, suffix)
            if engine is not None:
                out.append(Candidate("tensorrt", prec, lambda e=engine: _load(e, "tensorrt", dev)))
    return [c for c in out if precision is None or c.precision == precision]


def find_export(weights: Path, suffix: str) -> Path | None:
    """An export of the checkpoint ``weights`` with ``suffix``: ``<stem><suffix>`` beside it, else in the cache
    (``<sha[:20]>-v<version><suffix>``), when its metadata names the checkpoint's SHA-256."""
    from selfee.export.exporter import cached_export_path
    from selfee.fileio import file_sha256

    sha = file_sha256(weights)
    for path in (weights.with_name(weights.stem + suffix), cached_export_path(weights, suffix)):
        side = path.with_name(path.name + ".json")
        if path.is_file() and side.is_file():
            try:
                if json.loads(side.read_text()).get("checkpoint_sha256") == sha:
                    return path
            except (OSError, ValueError):
                continue
    return None


def _auto(weights: Path, model, cfg, dev, videos, precision) -> Embedder:
    from selfee.export.choose import choose, machine_id
    from selfee.fileio import file_sha256

    cands = candidates(weights, model, dev, videos, precision)
    if not cands:
        raise SelfeeError(f"{weights}: no backend runs precision {precision} on {dev} here")
    key = {"machine": machine_id(dev), "weights_sha256": file_sha256(weights),
           "input_size": [int(v) for v in cfg.data.input_size], "device": str(dev), "precision": precision or "any",
           "candidates": sorted(c.label for c in cands)}

    def frames():
        from selfee.export.exporter import verification_sets
        from selfee.export.verify import eager_reference

        sets, _ = verification_sets(cfg, 32, [str(v) for v in videos][:1])
        x = sets.get("real", sets.get("video-like"))
        return x, eager_reference(model.encoder, x)

    embedder, record = choose(cands, key, frames, subject=weights.name)
    embedder.precision = record["precision"]
    embedder.selection = {k: record[k] for k in ("chosen", "table", "measured_at", "cached", "cache_file")}
    return embedder


def _forced(weights: Path, model, cfg, backend: str, precision: str | None, dev, videos) -> Embedder:
    """``backend`` (and ``precision``) as asked, or the nearest path through :func:`selfee.fallback.fallback`."""
    from selfee.fallback import fallback

    wanted = f"{backend} {precision}" if precision else backend
    try:
        embedder = _open_as(weights, model, backend, precision, dev, videos)
    except (SelfeeError, ImportError) as exc:
        if backend == "tensorrt":  # an engine is a file the user builds: nothing to fall back to silently
            raise
        record = fallback(f"the {wanted} backend", "torch fp32", str(exc), subject=weights.name)
        embedder = _torch(model, dev, "fp32")
        embedder.fallback = record
    return embedder


def _open_as(weights: Path, model, backend: str, precision: str | None, dev, videos) -> Embedder:
    if backend == "torch":
        return _torch(model, dev, precision or ("bf16" if dev.type == "cuda" else "fp32"))
    if backend in ("torchscript", "onnx"):
        if precision == "int8" and backend == "onnx":
            found = find_export(weights, ".int8.onnx")
            if found is None:
                raise SelfeeError(f"no INT8 export of {weights.name} beside it or in the cache (make one: selfee-fast "
                                  f"export {weights} --out {weights.parent} --precision int8 --calibrate VIDEO)")
            return _load(found, "onnx", dev)
        if precision not in (None, "fp32"):
            raise SelfeeError(f"the cached {backend} export of a checkpoint runs in fp32, not {precision}")
        return _cached(weights, backend, dev, videos)
    if backend == "tensorrt":
        suffix = ".int8.engine" if precision == "int8" else ".engine"
        found = find_export(weights, suffix)
        if found is None:
            raise SelfeeError(f"the tensorrt backend needs an exported model (an engine built from {weights.name}): selfee-fast export "
                              f"{weights} --out {weights.parent} --format onnx --trt")
        return _load(found, "tensorrt", dev)
    raise SelfeeError(f"unknown backend '{backend}' (choose from: auto, torch, torchscript, onnx, tensorrt)")


def _torch(model, dev, precision: str) -> TorchEmbedder:
    amp = {"fp32": "off", "bf16": "bf16", "fp16": "fp16"}.get(precision)
    if amp is None:
        raise SelfeeError(f"the torch backend runs fp32, bf16 or fp16, not {precision}")
    embedder = TorchEmbedder(model.encoder, dev, amp=amp)
    embedder.precision = precision
    return embedder


def _load(path: Path, backend: str, dev) -> Embedder:
    from selfee.export.runtime import load_exported

    embedder = load_exported(path, backend, str(dev))[0]
    embedder.precision = embedder.meta.get("precision", "fp32")
    return embedder


def _cached(checkpoint: Path, backend: str, dev, videos) -> Embedder:
    """``checkpoint`` run through its fp32 export for ``backend`` in the cache (made and verified on first use)."""
    from selfee.export.exporter import cached_export

    return _load(cached_export(checkpoint, backend, videos), backend, dev)


def _ort_has_cuda() -> bool:
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
