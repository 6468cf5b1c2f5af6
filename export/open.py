"""Weights -> Embedder: the one place that decides which backend runs a checkpoint or an exported model.

``selfee-fast embed`` (and evaluate, demo, bench) open their Embedder here and hand it, or this
function, to :func:`selfee.embed.embed_videos`. A checkpoint runs in eager PyTorch, or on the CPU
through :data:`CPU_DEFAULT_BACKEND` (exported once into the cache); an export runs in its own
runtime. Without ONNX installed, checkpoints still open (in PyTorch).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from selfee.config import SelfeeConfig
from selfee.embed.embedder import Embedder, TorchEmbedder
from selfee.errors import SelfeeError
from selfee.runtime import resolve_device

log = logging.getLogger("selfee")

# The CPU backend that `--backend auto` gives a checkpoint: the fastest one measured on CPU
# (ONNX Runtime; see bench/RESULTS.md). The checkpoint is exported once into a cache.
CPU_DEFAULT_BACKEND = "onnx"

_KINDS = {".pt": "torch", ".pth": "torch", ".pkl": "torch", ".ts": "torchscript", ".onnx": "onnx",
          ".engine": "tensorrt", ".plan": "tensorrt"}


def backend_for(path: Path) -> str:
    """The backend a weights file is made for, from its suffix (a checkpoint, ``torch``, when unknown)."""
    return _KINDS.get(Path(path).suffix.lower(), "torch")


def open_embedder(weights: str | os.PathLike, backend: str = "auto", device: str = "auto",
                  videos=()) -> tuple[Embedder, SelfeeConfig]:
    """(Embedder, SelfeeConfig of the weights) for a checkpoint or an exported model.

    ``auto`` takes the backend from the file type (``.pt``/``.pth``/``.pkl``: torch, ``.ts``:
    torchscript, ``.onnx``: onnx, ``.engine``/``.plan``: tensorrt). A checkpoint on the CPU runs
    with :data:`CPU_DEFAULT_BACKEND` when its packages are installed (exported once into the
    cache), else in PyTorch, with a log line saying why; ``torchscript`` or ``onnx`` given with a checkpoint
    use the same cache. A new cached export is verified on frames of ``videos`` (the ones about
    to be embedded) where given.
    """
    from selfee._deps import available

    weights = Path(weights)
    if not weights.exists():
        raise SelfeeError(f"{weights}: weights file not found")
    kind = backend_for(weights)
    if backend == "auto":
        backend = kind
        if kind == "torch" and resolve_device(device).type == "cpu" and CPU_DEFAULT_BACKEND != "torch":
            needed = ("onnx", "onnxruntime") if CPU_DEFAULT_BACKEND == "onnx" else ()
            missing = [m for m in needed if not available(m)]
            if missing:
                log.info("%s: running in torch (the faster %s backend needs %s, not installed)", weights,
                         CPU_DEFAULT_BACKEND, " and ".join(missing))
            else:
                try:
                    return _cached(weights, CPU_DEFAULT_BACKEND, device, videos)
                except SelfeeError as exc:
                    log.warning("%s: the %s backend is unavailable (%s); using torch", weights, CPU_DEFAULT_BACKEND, exc)
    if backend == "torch":
        if kind != "torch":
            raise SelfeeError(f"{weights}: the torch backend needs a checkpoint (.pt), not an exported {kind} model")
        from selfee.checkpoint import load_model

        model, cfg = load_model(weights)
        return TorchEmbedder(model.encoder, device), cfg
    if kind == "torch":
        return _cached(weights, backend, device, videos)
    from selfee.export.runtime import load_exported

    return load_exported(weights, backend, device)


def _cached(checkpoint: Path, backend: str, device: str, videos) -> tuple[Embedder, SelfeeConfig]:
    """``checkpoint`` run through its export for ``backend`` in the cache (made and verified on first use)."""
    from selfee.export.exporter import cached_export
    from selfee.export.runtime import load_exported

    return load_exported(cached_export(checkpoint, backend, videos), backend, device)
