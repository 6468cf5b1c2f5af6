"""DALI plumbing shared by the pipelines: backend choice, decode lanes per video, DALI <-> torch."""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types

log = logging.getLogger("selfee")

# What NVDEC (DALI's "mixed" video decoder) takes: 8-bit 4:2:0 (10-bit for HEVC/VP9/AV1), even sizes.
NVDEC_PIX_FMTS = {"yuv420p", "yuvj420p", "nv12"}
NVDEC_PIX_FMTS_10BIT = {"yuv420p10le", "p010le"}
# (min width, min height, max width, max height) per codec, from the "Hardware video decoder
# capabilities" table of NVIDIA's NVDEC Video Decoder API Programming Guide (Video Codec SDK 12/13,
# Turing and later; 8192 for HEVC/VP9 needs Pascal or later). Only codecs DALI's mixed decoder maps to
# NVDEC are listed: it rejects MPEG-1/2 and VC-1 (which NVDEC takes: min 48x16, max 4080x4080 and
# 2048x1024), and H.264 4:4:4 (High 4:4:4 Predictive) is not decodable by NVDEC at all. DALI checks
# the GPU's own caps again at run time; a stream failing there falls back to PyAV.
NVDEC_LIMITS = {
    "h264": (48, 16, 4096, 4096),
    "hevc": (144, 144, 8192, 8192),
    "vp8": (48, 16, 4096, 4096),
    "vp9": (128, 128, 8192, 8192),
    "av1": (128, 128, 8192, 8192),
    "mpeg4": (48, 16, 2032, 2032),
    "mjpeg": (64, 64, 32768, 16384),
}
NVDEC_CODECS = set(NVDEC_LIMITS)
# DALI's CPU video decoder (libavcodec inside DALI) takes only these; H.264/HEVC/MPEG-4 go through PyAV.
DALI_CPU_CODECS = {"vp8", "vp9", "mjpeg"}

LANES = ("nvdec", "dali-cpu", "pyav")


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


def choose_lane(info, device: torch.device, cpu_decoder: str = "auto") -> tuple[str, str]:
    """(lane, reason) for decoding one video: ``nvdec`` on a GPU when NVDEC takes the stream,
    ``dali-cpu`` for VP8/VP9/MJPEG on CPU, ``pyav`` otherwise (and always with ``cpu_decoder='pyav'``)."""
    codec, pix = info.codec, info.pix_fmt or ""
    if info.vfr:
        return "pyav", "variable frame rate: frames are indexed by PyAV's timestamps"
    if device.type == "cuda":
        pix_ok = pix in NVDEC_PIX_FMTS or (pix in NVDEC_PIX_FMTS_10BIT and codec in {"hevc", "vp9", "av1"})
        if codec not in NVDEC_CODECS:
            return "pyav", f"NVDEC does not decode {codec}"
        if not pix_ok:
            return "pyav", f"NVDEC does not decode {codec} {info.profile or ''} {pix}".replace("  ", " ")
        if info.width % 2 or info.height % 2:
            return "pyav", f"odd frame size {info.width}x{info.height} is not decodable by NVDEC"
        min_w, min_h, max_w, max_h = NVDEC_LIMITS[codec]
        if not (min_w <= info.width <= max_w and min_h <= info.height <= max_h):
            return "pyav", (f"frame size {info.width}x{info.height} is outside NVDEC's limits for {codec} "
                            f"({min_w}x{min_h} to {max_w}x{max_h})")
        return "nvdec", f"{codec} {pix} on NVDEC"
    if cpu_decoder == "auto" and codec in DALI_CPU_CODECS:
        return "dali-cpu", f"{codec} on DALI's CPU decoder"
    if cpu_decoder == "pyav":
        return "pyav", "PyAV requested"
    return "pyav", f"DALI's CPU decoder does not read {codec}"


_COPY_STREAMS: dict[int, torch.cuda.Stream] = {}


def _copy_stream(device: torch.device):
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _COPY_STREAMS:
        _COPY_STREAMS[index] = torch.cuda.Stream(index)
    return _COPY_STREAMS[index]


def to_torch(tensor, device: torch.device, sync: bool = True) -> torch.Tensor:
    """One DALI tensor (CPU or GPU) -> a torch tensor on ``device`` (a copy).

    On a GPU the copy runs on a stream of its own and is waited for (``sync``) before the tensor is
    handed out: DALI reuses its output buffers at the next run, and a copy queued behind the
    training or inference work on the current stream could read a buffer already overwritten.
    """
    if hasattr(tensor, "as_cpu") and device.type != "cuda":
        tensor = tensor.as_cpu()
    if device.type == "cuda":
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        stream = _copy_stream(device)
        out = torch.empty(tensor.shape(), dtype=to_torch_type[tensor.dtype], device=device)
        feed_ndarray(tensor, out, cuda_stream=stream)
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
