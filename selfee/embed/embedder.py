"""The Embedder interface (uint8 live frames in, float32 embeddings out), its host/device plumbing, and the
eager PyTorch Embedder.

Every backend (this module's :class:`TorchEmbedder`; TorchScript, ONNX Runtime and TensorRT in
``selfee.export.runtime`` and ``selfee.export.tensorrt``) implements :class:`Embedder`, built from
the same pieces: :class:`HostToDevice` copies inputs on a side stream, :func:`device_to_host`
starts the copy back and returns a pending result, so that embedding queues the next batch
before it waits for the previous one.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import torch

from selfee.runtime import on_device, resolve_amp, resolve_device

log = logging.getLogger("selfee")


class Result(Protocol):
    """The embeddings of one batch, maybe still being computed or copied."""

    def result(self) -> np.ndarray: ...


class Embedder(Protocol):
    """Maps a uint8 batch of live frames (B x 3 x H x W, on the CPU or the Embedder's GPU) to float32
    embeddings (B x dim).

    ``device`` is where it wants its inputs (embedding pins host memory for a GPU);
    ``fixed_size`` is None, or the (height, width) of the only input size it takes (a TensorRT
    engine's profile); ``submit(frames)`` returns a :class:`Result`, so that the caller can queue
    the next batch before it waits for this one; calling it gives the array directly.
    """

    name: str
    dim: int | None
    device: torch.device
    fixed_size: tuple[int, int] | None

    def submit(self, frames: torch.Tensor) -> Result: ...

    def __call__(self, frames: torch.Tensor) -> np.ndarray: ...


class Ready:
    """A result already on the host."""

    def __init__(self, value: np.ndarray):
        self.value = value

    def result(self) -> np.ndarray:
        return self.value


class Pending:
    """Embeddings being copied into pinned host memory behind the GPU work queued before them."""

    def __init__(self, host: torch.Tensor, event: torch.cuda.Event):
        self.host = host
        self.event = event

    def result(self) -> np.ndarray:
        self.event.synchronize()
        return self.host.numpy()


class HostEmbedder:
    """Base of Embedders that compute on the host in ``__call__``: CPU inputs of any size, and a
    ``submit`` that returns the finished result."""

    name: str
    dim: int | None
    device = torch.device("cpu")
    fixed_size = None

    def submit(self, frames: torch.Tensor) -> Ready:
        return Ready(np.asarray(self(frames)))

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        raise NotImplementedError


def device_to_host(y: torch.Tensor) -> Ready | Pending:
    """Start copying ``y`` (B x dim, any float dtype) back as float32 without waiting for the GPU."""
    if y.device.type != "cuda":
        return Ready(y.float().numpy())
    y = y.float()
    host = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
    host.copy_(y, non_blocking=True)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(y.device))
    return Pending(host, event)


class HostToDevice:
    """Copies uint8 batches to a GPU on a side stream, so the copy of batch i+1 overlaps the compute of i.

    The compute stream is ``compute`` when given (an Embedder's own stream), else the stream
    current when the copy is made; it waits for the copy, and the copied tensor is marked as used
    on it so that its memory is not reused before the compute has read it.
    """

    def __init__(self, device: torch.device, compute: torch.cuda.Stream | None = None):
        self.device = device
        self.compute = compute
        if device.type == "cuda":
            with torch.cuda.device(device):
                self.stream = torch.cuda.Stream(device)
        else:
            self.stream = None

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.stream is None:
            return frames.cpu()
        compute = self.compute if self.compute is not None else torch.cuda.current_stream(self.device)
        if frames.is_cuda:
            # Frames a GPU decoder wrote on the current stream: the compute stream waits for them.
            x = frames.to(self.device)
            current = torch.cuda.current_stream(self.device)
            if compute != current:
                compute.wait_stream(current)
                x.record_stream(compute)
            return x
        if not frames.is_pinned():
            frames = frames.pin_memory()
        with torch.cuda.stream(self.stream):
            x = frames.to(self.device, non_blocking=True)
        compute.wait_stream(self.stream)
        x.record_stream(compute)  # allocated on the copy stream, used on the compute stream
        return x


class TorchEmbedder:
    """Eager PyTorch encoder: channels-last, bf16 autocast and a CUDA graph per input shape on GPU; fp32 on CPU.

    On a GPU the graph is captured for the first batch size seen and replayed for every batch
    (smaller ones are padded into it), which removes the per-layer launch overhead of eager mode.
    """

    name = "torch"
    fixed_size = None

    def __init__(self, encoder: torch.nn.Module, device: str | torch.device = "auto", amp: str = "auto",
                 cuda_graphs: bool | None = None):
        self.device = resolve_device(str(device))
        self.amp = resolve_amp(amp, self.device)
        self.encoder = encoder.eval().to(self.device).to(memory_format=torch.channels_last)
        self.dim = int(encoder.embed_dim) if hasattr(encoder, "embed_dim") else None
        self.h2d = HostToDevice(self.device)
        self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
        self._graphs: dict[tuple, tuple] = {}
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255).contiguous(memory_format=torch.channels_last)
        if self.amp is not None:
            # Autocast's cache of cast weights does not mix with CUDA graph capture (PyTorch's advice).
            with torch.autocast(self.device.type, dtype=self.amp, cache_enabled=False):
                return self.encoder(x).float()
        return self.encoder(x).float()

    def _graph(self, x: torch.Tensor):
        key = tuple(x.shape[1:])
        entry = self._graphs.get(key)
        if entry is not None and entry[1].shape[0] >= x.shape[0]:
            return entry
        static_in = torch.zeros_like(x)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up outside the capture, as CUDA graphs require
            for _ in range(2):
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # the prefetch thread may use CUDA meanwhile
            static_out = self._forward(static_in)
        self._graphs[key] = entry = (graph, static_in, static_out)
        return entry

    @torch.inference_mode()
    def submit(self, frames: torch.Tensor) -> Ready | Pending:
        with on_device(self.device):  # graph capture, side streams and events on this embedder's GPU
            return self._submit(frames)

    def _submit(self, frames: torch.Tensor) -> Ready | Pending:
        x = self.h2d(frames)
        if not self.cuda_graphs:
            return device_to_host(self._forward(x))
        try:
            graph, static_in, static_out = self._graph(x)
        except Exception as exc:  # capture unsupported here: eager mode is still correct (strict mode: an error)
            from selfee.fallback import fallback

            self.fallback = fallback("CUDA graphs", "eager mode", f"capture failed: {type(exc).__name__}: {exc}")
            self.cuda_graphs = False
            return device_to_host(self._forward(x))
        n = x.shape[0]
        static_in[:n].copy_(x)
        graph.replay()
        return device_to_host(static_out[:n])

    def __call__(self, frames: torch.Tensor) -> np.ndarray:
        return self.submit(frames).result()
