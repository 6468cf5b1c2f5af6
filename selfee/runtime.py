"""Where and how work runs: devices, autocast dtype, torchrun processes, prefetch threads, versions.

One device resolver (:func:`resolve_device`) serves every command (training, embedding, the
exports' runtimes, TensorRT, the analyses), so ``auto``, ``cpu``, ``cuda`` and ``cuda:N`` mean
the same everywhere and a bad name or a missing GPU is the same one-line error.
"""

from __future__ import annotations

import os
import platform
import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from selfee.errors import SelfeeError

# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------


class Cuda:
    """The CUDA queries device resolution makes (a test may pass a fake; see ``selfee.export.tensorrt``)."""

    @staticmethod
    def available() -> bool:
        return torch.cuda.is_available()

    @staticmethod
    def count() -> int:
        return torch.cuda.device_count()

    @staticmethod
    def current() -> int:
        return torch.cuda.current_device()


CUDA = Cuda()


def resolve_device(name: str | torch.device = "auto", *, gpu: str | None = None, index: bool = False,
                   cuda: Cuda | None = None) -> torch.device:
    """``auto`` (the GPU when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` -> the device used.

    ``gpu`` names a feature that runs on a GPU only: ``auto`` then means the GPU and ``cpu`` is an
    error naming it. ``index``: a bare ``cuda`` gets the current GPU's number (what DALI, ONNX
    Runtime and TensorRT need). An unknown name, a GPU that is not there, or ``cuda:N`` beyond the
    GPUs present is a one-line :class:`SelfeeError`.
    """
    cuda = cuda or CUDA
    text = str(name).strip().lower()
    if text == "auto":
        text = "cuda" if gpu or cuda.available() else "cpu"
    try:
        dev = torch.device(text)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise SelfeeError(f"unknown device {str(name)!r} (use auto, cpu, cuda or cuda:N)")
    if dev.type == "cpu":
        if gpu:
            raise SelfeeError(f"{gpu} runs on a GPU: use --device cuda (or auto, or cuda:N)")
        return dev
    if not cuda.available():
        raise SelfeeError(f"device '{name}' requested but no CUDA GPU is available (use --device cpu)")
    if dev.index is not None and dev.index >= cuda.count():
        raise SelfeeError(f"device {dev} requested but PyTorch sees {cuda.count()} GPU(s)")
    return indexed(dev, cuda) if index else dev


def indexed(device: str | torch.device, cuda: Cuda | None = None) -> torch.device:
    """``device`` with its GPU number: a bare ``cuda`` becomes ``cuda:<current device>``. Unchanged
    without CUDA (the caller says why a GPU path cannot run)."""
    cuda = cuda or CUDA
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and cuda.available():
        dev = torch.device("cuda", cuda.current())
    return dev


def on_device(device: torch.device | str):
    """``torch.cuda.device(device)`` for a GPU (its kernels, streams and events go to it), else nothing.

    The current CUDA device is per thread and defaults to 0: without this, work for ``cuda:1``
    queued from a thread where device 0 is current lands on (or synchronises with) device 0.
    """
    device = torch.device(device)
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` (auto, bf16, fp16, off) on ``device``; None = full fp32."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if amp == "off":
        return None
    if amp == "fp16" and device.type != "cuda":
        raise SelfeeError("amp=fp16 needs a CUDA GPU; on CPU use amp=off or amp=bf16")
    return torch.bfloat16 if amp == "bf16" else torch.float16


# ---------------------------------------------------------------------------------------------
# Processes under torchrun
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_name: str, timeout: timedelta | None = None) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); pick this rank's device.

    ``timeout`` (default: PyTorch's, 10 minutes for NCCL) bounds how long a collective waits for
    the other ranks; ``embed`` gives a long one, since its ranks finish at different times.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), resolve_device(device_name)
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name != "cpu"
    if use_cuda:  # before the process group, so that NCCL binds this rank to its own GPU
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", **({"timeout": timeout} if timeout else {}))
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    return DistInfo(rank, world, local), device


# ---------------------------------------------------------------------------------------------
# Background iteration
# ---------------------------------------------------------------------------------------------


def background(iterable: Iterable, depth: int = 3) -> Iterator:
    """Run ``iterable`` in a thread, ``depth`` items ahead (decoding overlaps the consumer's work).

    An exception in the thread is raised in the consumer; a consumer that stops early stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def run():
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, done))
        except BaseException as exc:  # re-raised in the consumer
            q.put((False, exc))

    t = threading.Thread(target=run, daemon=True, name="selfee-prefetch")
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        t.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------------

# key in the record -> (import name, pip distributions that may provide it; the first installed gives the version)
OPTIONAL_PACKAGES = {
    "torchvision": ("torchvision", ("torchvision",)),
    "av": ("av", ("av",)),
    "dali": ("nvidia.dali", ("nvidia-dali-cuda120", "nvidia-dali-cuda130", "nvidia-dali-cuda110")),
    "onnx": ("onnx", ("onnx",)),
    "onnxruntime": ("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    "tensorrt": ("tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_libs")),
    "cv2": ("cv2", ("opencv-python-headless", "opencv-python", "opencv-contrib-python-headless",
                    "opencv-contrib-python")),
    "sklearn": ("sklearn", ("scikit-learn",)),
}


def versions() -> dict:
    """What produced an output: selfee-fast, Python, torch, NumPy, CUDA and the GPUs when present, and
    the optional packages importable here.

    Versions come from the package metadata, without importing the package (importing TensorRT or
    ONNX Runtime initialises CUDA libraries just to read a string).
    """
    from importlib.metadata import PackageNotFoundError, version

    from selfee import __version__
    from selfee._deps import available

    out = {"selfee_fast": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "numpy": np.__version__}
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    for key, (module, dists) in OPTIONAL_PACKAGES.items():
        if not available(module):
            continue
        for dist in dists:
            try:
                out[key] = version(dist)
                break
            except PackageNotFoundError:
                continue
        else:
            out[key] = getattr(sys.modules.get(module), "__version__", "unknown")
    return out
