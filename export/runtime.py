"""Running exports: an Embedder per backend (TorchScript, ONNX Runtime, TensorRT) behind one interface."""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from selfee._deps import require
from selfee.embed.embedder import HostToDevice, Ready, device_to_host
from selfee.errors import SelfeeError
from selfee.export.graph import INPUT, OUTPUT, metadata_config, parse_metadata
from selfee.fallback import fallback
from selfee.runtime import on_device, resolve_device

log = logging.getLogger("selfee")

BACKENDS = ("torchscript", "onnx", "tensorrt")
CUDA = "CUDAExecutionProvider"
SUFFIX = {"torchscript": ".ts", "onnx": ".onnx", "tensorrt": ".engine"}


class TorchScriptEmbedder:
    """A TorchScript export (uint8 frames in, the scaling inside) on the CPU or a GPU."""

    name = "torchscript"
    fixed_size = None

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "auto"):
        from selfee.export.torchscript import load_torchscript

        self.device = resolve_device(device, index=True)  # the providers need the GPU's number
        self.module, text = load_torchscript(path, self.device)
        self.meta = parse_metadata(text, str(path))
        self.dim = int(self.meta["embed_dim"])
        self.h2d = HostToDevice(self.device)

    @torch.inference_mode()
    def submit(self, frames: torch.Tensor):
        with on_device(self.device):  # its streams and events on this module's GPU, whatever is current
            return device_to_host(self.module(self.h2d(frames).contiguous()))

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        return self.submit(frames).result()


class OnnxEmbedder:
    """An ONNX export in ONNX Runtime: the CPU provider, or CUDA with inputs bound in GPU memory.

    On a GPU, ``submit`` hands the batch to one worker thread (copy in, ``run_with_iobinding``,
    copy back) and returns its future, so the decoding of the next batch and the writing of the
    previous one go on while ONNX Runtime computes (it releases the GIL while it runs). One
    worker keeps the batches in order.

    The CUDA provider counts only once the session has it (``session.get_providers()``): onnxruntime-gpu
    lists it as available even where it cannot load it (no cuDNN, another CUDA major) and then
    builds a CPU session. Either way the embedder runs on the CPU, through ``selfee.fallback``
    (an error in strict mode); ``self.fallback`` keeps the record.
    """

    name = "onnx"
    fixed_size = None

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "auto", threads: int | None = None):
        ort = require("onnxruntime", "the ONNX Runtime backend")
        self.device = resolve_device(device, index=True)  # the providers need the GPU's number
        self.fallback: dict | None = None
        providers: list = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if CUDA not in ort.get_available_providers():
                self._to_cpu(path, "this onnxruntime has no CUDA provider: pip install onnxruntime-gpu")
            else:
                providers = [(CUDA, {"device_id": self.device.index or 0}), "CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=providers)
        except Exception as exc:  # not an ONNX file, truncated, unsupported opset, ...
            raise SelfeeError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
        if self.device.type == "cuda" and CUDA not in self.session.get_providers():
            self._to_cpu(path, "onnxruntime-gpu could not load its CUDA provider (cuDNN or the CUDA libraries of "
                               "its CUDA major missing?); the session has only " + ", ".join(self.session.get_providers()))
        text = self.session.get_modelmeta().custom_metadata_map.get("selfee")
        if text is None:
            raise SelfeeError(f"{path}: not a selfee-fast export (no 'selfee' metadata in the ONNX model)")
        self.meta = parse_metadata(text, str(path))
        self.dim = int(self.meta["embed_dim"])
        self.input_type = self.session.get_inputs()[0].type  # tensor(uint8), or tensor(float) for a float copy
        self._worker: ThreadPoolExecutor | None = None
        self._stream = None  # the worker's copy stream (made in the worker, on the session's GPU)

    def _to_cpu(self, path, why: str) -> None:
        self.fallback = fallback("ONNX Runtime's CUDA provider", "ONNX Runtime on the CPU", why, subject=str(path))
        self.device = torch.device("cpu")

    def submit(self, frames: torch.Tensor) -> Future | Ready:
        """The embeddings of ``frames`` as a pending result (``.result()``): on a GPU computed in the worker."""
        if self.device.type != "cuda":
            return Ready(self(frames))
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selfee-onnx")
        return self._worker.submit(self._run_cuda, frames)

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        if self.device.type == "cuda":
            return self.submit(frames).result()
        x = frames.cpu().contiguous().numpy()
        if self.input_type != "tensor(uint8)":
            x = x.astype(np.float32)
        return self.session.run([OUTPUT], {INPUT: x})[0]

    @torch.inference_mode()
    def _run_cuda(self, frames: torch.Tensor) -> np.ndarray:
        # In the worker thread, whose current device is 0 until set: enter the session's GPU.
        with torch.cuda.device(self.device):
            if self._stream is None:
                self._stream = torch.cuda.Stream(self.device)
            if frames.is_cuda:  # frames a GPU decoder wrote on the default stream
                self._stream.wait_stream(torch.cuda.default_stream(frames.device))
            with torch.cuda.stream(self._stream):
                # I/O binding: ONNX Runtime reads the frames and writes the embeddings in torch's GPU memory.
                x = frames.to(self.device, non_blocking=True).contiguous()
                if self.input_type != "tensor(uint8)":
                    x = x.float()
                y = torch.empty((x.shape[0], self.dim), dtype=torch.float32, device=self.device)
                if frames.is_cuda:
                    frames.record_stream(self._stream)
            self._stream.synchronize()  # ONNX Runtime runs on its own stream: the input must be there first
            binding = self.session.io_binding()
            idx = self.device.index
            binding.bind_input(INPUT, "cuda", idx, np.uint8 if x.dtype == torch.uint8 else np.float32,
                               tuple(x.shape), x.data_ptr())
            binding.bind_output(OUTPUT, "cuda", idx, np.float32, tuple(y.shape), y.data_ptr())
            self.session.run_with_iobinding(binding)  # returns once ONNX Runtime's stream has finished
            with torch.cuda.stream(self._stream):
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
