"""Running exports: an Embedder per backend (TorchScript, ONNX Runtime, TensorRT) behind one interface."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from selfee._deps import require
from selfee.config import SelfeeConfig
from selfee.embed import HostToDevice, device_to_host
from selfee.errors import SelfeeError
from selfee.export.graph import INPUT, OUTPUT, metadata_config, parse_metadata

log = logging.getLogger("selfee")

BACKENDS = ("torchscript", "onnx", "tensorrt")
SUFFIX = {"torchscript": ".ts", "onnx": ".onnx", "tensorrt": ".engine"}


def _device(device: str | torch.device) -> torch.device:
    from selfee.train import resolve_device

    return resolve_device(str(device))


class TorchScriptEmbedder:
    """A TorchScript export (uint8 frames in, the scaling inside) on the CPU or a GPU."""

    name = "torchscript"

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "auto"):
        from selfee.export.torchscript import load_torchscript

        self.device = _device(device)
        self.module, text = load_torchscript(path, self.device)
        self.meta = parse_metadata(text, str(path))
        self.dim = int(self.meta["embed_dim"])
        self.h2d = HostToDevice(self.device)

    @torch.inference_mode()
    def submit(self, frames: torch.Tensor):
        return device_to_host(self.module(self.h2d(frames).contiguous()))

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        return self.submit(frames).result()


class OnnxEmbedder:
    """An ONNX export in ONNX Runtime: the CPU provider, or CUDA with inputs bound in GPU memory."""

    name = "onnx"

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "auto", threads: int | None = None):
        ort = require("onnxruntime", "the ONNX Runtime backend")
        self.device = _device(device)
        providers: list = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise SelfeeError(
                    "the ONNX backend on a GPU needs onnxruntime-gpu (this onnxruntime has no CUDA provider): "
                    "pip install onnxruntime-gpu, or use --device cpu"
                )
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0}), "CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # not an ONNX file, truncated, unsupported opset, ...
            raise SelfeeError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
        text = self.session.get_modelmeta().custom_metadata_map.get("selfee")
        if text is None:
            raise SelfeeError(f"{path}: not a selfee-fast export (no 'selfee' metadata in the ONNX model)")
        self.meta = parse_metadata(text, str(path))
        self.dim = int(self.meta["embed_dim"])
        self.input_type = self.session.get_inputs()[0].type  # tensor(uint8), or tensor(float) for a float copy

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        if self.device.type == "cuda":
            return self._run_cuda(frames)
        x = frames.cpu().contiguous().numpy()
        if self.input_type != "tensor(uint8)":
            x = x.astype(np.float32)
        return self.session.run([OUTPUT], {INPUT: x})[0]

    def _run_cuda(self, frames: torch.Tensor) -> np.ndarray:
        # I/O binding: ONNX Runtime reads the frames and writes the embeddings in torch's GPU memory.
        x = frames.to(self.device, non_blocking=True).contiguous()
        if self.input_type != "tensor(uint8)":
            x = x.float()
        y = torch.empty((x.shape[0], self.dim), dtype=torch.float32, device=self.device)
        binding = self.session.io_binding()
        idx = self.device.index or 0
        binding.bind_input(INPUT, "cuda", idx, np.uint8 if x.dtype == torch.uint8 else np.float32, tuple(x.shape),
                           x.data_ptr())
        binding.bind_output(OUTPUT, "cuda", idx, np.float32, tuple(y.shape), y.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # ONNX Runtime runs on its own stream
        self.session.run_with_iobinding(binding)
        return y.cpu().numpy()


def load_exported(path: str | os.PathLike, backend: str, device: str = "auto"):
    """(Embedder, SelfeeConfig from the export's metadata) for an exported model file."""
    path = Path(path)
    if backend == "torchscript":
        embedder = TorchScriptEmbedder(path, device)
    elif backend == "onnx":
        embedder = OnnxEmbedder(path, device)
    elif backend == "tensorrt":
        from selfee.export.tensorrt import TensorRTEmbedder

        embedder = TensorRTEmbedder(path, device)
    else:
        raise SelfeeError(f"unknown backend '{backend}' (choose from: torch, {', '.join(BACKENDS)})")
    return embedder, metadata_config(embedder.meta, str(path))


# ---------------------------------------------------------------------------------------------
# Checkpoints exported on demand, once, into a cache
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$SELFEE_CACHE``, else ``$XDG_CACHE_HOME/selfee-fast``, else ``~/.cache/selfee-fast``."""
    env = os.environ.get("SELFEE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "selfee-fast"


def cached_export(checkpoint: str | os.PathLike, backend: str) -> Path:
    """The export of ``checkpoint`` for ``backend`` in the cache, made (and verified) on first use."""
    from selfee import __version__
    from selfee.checkpoint import file_sha256
    from selfee.export.exporter import export_checkpoint

    if backend not in ("torchscript", "onnx"):
        raise SelfeeError(
            f"the {backend} backend needs an exported model: selfee-fast export {checkpoint} --out DIR --format onnx --trt"
        )
    sha = file_sha256(checkpoint)
    folder = cache_dir() / "exports"
    name = f"{sha[:20]}-v{__version__}"
    path = folder / f"{name}{SUFFIX[backend]}"
    if not path.is_file():
        log.info("exporting %s to %s once (cached in %s)", checkpoint, backend, folder)
        export_checkpoint(checkpoint, folder, fmt=backend, name=name, frames=8, quiet=True)
    return path


def load_cached_export(checkpoint: str | os.PathLike, backend: str, device: str = "auto"):
    """(Embedder, the checkpoint's SelfeeConfig) running ``checkpoint`` through its cached export."""
    embedder, cfg = load_exported(cached_export(checkpoint, backend), backend, device)
    embedder.source = str(checkpoint)
    return embedder, cfg


def config_of(path: str | os.PathLike) -> SelfeeConfig:
    """The SelfeeConfig stored in an export (ONNX or TorchScript metadata, TensorRT sidecar)."""
    from selfee.embed import backend_for

    path = Path(path)
    backend = backend_for(path)
    if backend == "onnx":
        from selfee.export.onnx import read_metadata

        text = read_metadata(path)
    elif backend == "torchscript":
        from selfee.export.torchscript import load_torchscript

        text = load_torchscript(path, "cpu")[1]
    elif backend == "tensorrt":
        from selfee.export.tensorrt import read_engine_metadata

        return metadata_config(read_engine_metadata(path), str(path))
    else:
        raise SelfeeError(f"{path}: not an exported model (.ts, .onnx, .engine)")
    return metadata_config(parse_metadata(text, str(path)), str(path))
