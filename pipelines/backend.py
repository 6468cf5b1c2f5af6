"""DALI plumbing shared by the pipelines: backend choice, the DALI version, decode lanes per video,
which errors are decode failures, DALI <-> torch."""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types

from selfee.errors import SelfeeError, VideoError
from selfee.video.nvdec import LANE_NAMES, choose_lane  # noqa: F401  (the lane rule, here for the pipelines)

log = logging.getLogger("selfee")

# The first DALI whose video decoder selects frames (start_frame/end_frame) and pads as told
# (pad_mode): DALI 1.48.0 release notes, "Improved fn.experimental.decoders.video" (NVIDIA/DALI#5814,
# #5830), which also gave fn.experimental.warp_perspective its CPU backend (#5829).
DALI_MIN = "1.48"
VIDEO_ARGS = ("start_frame", "end_frame", "pad_mode")
_VIDEO_SCHEMAS = ("decoders__Video", "experimental__decoders__Video")  # newest name first


def _schema_args(name: str) -> set[str] | None:
    from nvidia.dali import backend as dali_backend

    schema = dali_backend.TryGetSchema(name) if hasattr(dali_backend, "TryGetSchema") else None
    return None if schema is None else set(schema.GetArgumentNames())


@functools.cache
def video_decoder():
    """DALI's video decoder taking :data:`VIDEO_ARGS` (``fn.decoders.video``, or its experimental name on a
    DALI from before the move), or a SelfeeError naming the installed DALI and the minimum."""
    for name in _VIDEO_SCHEMAS:
        args = _schema_args(name)
        if args is not None and set(VIDEO_ARGS) <= args:
            op = fn
            for part in name.split("__")[:-1]:
                op = getattr(op, part)
            return op.video
    import nvidia.dali

    raise SelfeeError(f"DALI {getattr(nvidia.dali, '__version__', '?')} has no video decoder taking "
                      f"{', '.join(VIDEO_ARGS)} (fn.decoders.video): selfee-fast needs DALI >= {DALI_MIN}; "
                      "pip install -U 'selfee-fast[dali]' (CUDA 12) or 'selfee-fast[dali-cu13]' (CUDA 13)")


def dali_error() -> str | None:
    """None when the installed DALI has what the pipelines call, else why not (one line)."""
    try:
        video_decoder()
    except SelfeeError as exc:
        return str(exc)
    return None


def decode_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a video failing to decode (DALI's RuntimeError, a VideoError, an I/O or FFmpeg
    error), which falls back to PyAV; anything else (TypeError, KeyError, ...) is a bug and propagates."""
    if isinstance(exc, (NotImplementedError, RecursionError)):
        return False
    if isinstance(exc, (RuntimeError, VideoError, OSError, EOFError)):
        return True
    return type(exc).__module__.startswith("av.")  # PyAV's errors while cutting segments


def one_line(exc: BaseException) -> str:
    """The last non-empty line of an error (DALI's errors are multi-line), at most 200 characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def sync_pipeline(batch_size: int, device_id, num_threads: int = 2, conditionals: bool = False):
    """``pipeline_def`` for graphs fed with ``feed_input`` and run once per feed (no prefetch queue)."""
    return pipeline_def(
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=device_id,
        prefetch_queue_depth=1,
        exec_async=False,
        exec_pipelined=False,
        enable_conditionals=conditionals,
    )


def device_id(device: torch.device):
    """DALI's ``device_id`` for a torch device (None: CPU-only pipeline)."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.cache
def backend_error(device_type: str, index: int | None) -> str | None:
    """None when a tiny DALI graph runs on this backend, else why not (probed once per process)."""
    dev = "gpu" if device_type == "cuda" else "cpu"
    too_old = dali_error()
    if too_old is not None:
        return too_old
    if dev == "gpu":
        if not torch.cuda.is_available():
            return "no CUDA GPU is available"
        index = torch.cuda.current_device() if index is None else index

    @sync_pipeline(1, index if dev == "gpu" else None, num_threads=1)
    def probe():
        x = fn.external_source(name="x", dtype=types.UINT8, layout="HWC", device=dev)
        return fn.cast(x, dtype=types.FLOAT) * 2.0

    try:
        p = probe()
        p.build()
        p.feed_input("x", [np.ones((2, 2, 3), np.uint8)] if dev == "cpu" else [torch.ones(2, 2, 3, dtype=torch.uint8,
                                                                                          device=torch.device("cuda", index))])
        (out,) = p.run()
        ok = float(np.asarray(out.as_cpu().as_tensor()).sum()) == 24.0
        return None if ok else "a test graph gave a wrong result"
    except Exception as exc:  # DALI raises RuntimeError subclasses with multi-line text
        return str(exc).strip().splitlines()[-1][:200] or type(exc).__name__


_COPY_STREAMS: dict[int, torch.cuda.Stream] = {}


def _copy_stream(device: torch.device):
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _COPY_STREAMS:
        _COPY_STREAMS[index] = torch.cuda.Stream(index)
    return _COPY_STREAMS[index]


def ordered_copy(out, stream, current, copy) -> None:
    """Run ``copy(stream)`` (which writes ``out``) on ``stream``, ordered after the work queued on ``current``.

    ``out`` was allocated on ``current``: the caching allocator may hand it a block that kernels
    queued there still read (freed, not yet finished), so the copy stream first waits for ``current``;
    ``out`` then records ``stream``, so that freeing it later waits for the copy too.
    """
    stream.wait_stream(current)
    copy(stream)
    out.record_stream(stream)


def to_torch(tensor, device: torch.device, sync: bool = True) -> torch.Tensor:
    """One DALI tensor (CPU or GPU) -> a torch tensor on ``device`` (a copy).

    On a GPU the copy runs on a stream of its own (:func:`ordered_copy`) and is waited for (``sync``)
    before the tensor is handed out: DALI reuses its output buffers at the next run, and a copy queued
    behind the training or inference work on the current stream could read a buffer already overwritten.
    """
    if hasattr(tensor, "as_cpu") and device.type != "cuda":
        tensor = tensor.as_cpu()
    if device.type == "cuda":
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        stream = _copy_stream(device)
        out = torch.empty(tensor.shape(), dtype=to_torch_type[tensor.dtype], device=device)
        ordered_copy(out, stream, torch.cuda.current_stream(device),
                     lambda s: feed_ndarray(tensor, out, cuda_stream=s))
        if sync:
            stream.synchronize()
        return out
    return torch.from_numpy(np.array(tensor))


def batch_to_torch(batch, device: torch.device) -> torch.Tensor:
    """A DALI batch of equally shaped samples -> one N x ... torch tensor on ``device``."""
    return to_torch(batch.as_tensor(), device)


def samples_to_torch(batch, device: torch.device) -> list[torch.Tensor]:
    """A DALI batch of samples of any shapes -> a list of torch tensors on ``device`` (one wait for all)."""
    out = [to_torch(batch[i], device, sync=False) for i in range(len(batch))]
    if device.type == "cuda":
        _copy_stream(device).synchronize()
    return out


def dali_input(x: torch.Tensor):
    """A torch tensor in the form DALI's ``feed_input`` takes: numpy on CPU, the CUDA tensor itself on GPU."""
    return x if x.is_cuda else x.contiguous().numpy()
