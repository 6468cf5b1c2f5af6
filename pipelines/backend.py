"""DALI plumbing shared by the pipelines: backend choice, decode lanes per video, DALI <-> torch."""

from __future__ import annotations

import functools
import logging

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types

log = logging.getLogger("selfee")

# What NVDEC (DALI's "mixed" video decoder) takes: 8-bit 4:2:0 (10-bit for HEVC/VP9/AV1), even sizes.
NVDEC_CODECS = {"h264", "hevc", "vp8", "vp9", "av1", "mpeg4", "mjpeg"}
NVDEC_PIX_FMTS = {"yuv420p", "yuvj420p", "nv12"}
NVDEC_PIX_FMTS_10BIT = {"yuv420p10le", "p010le"}
NVDEC_MIN_SIZE = (48, 16)  # width, height
NVDEC_MAX_SIZE = {"h264": 4096, "mpeg4": 2032, "mjpeg": 4096}  # longest side; others 8192
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

    @sync_pipeline(1, index if dev == "gpu" else None, num_threads=1)
    def probe():
        x = fn.external_source(name="x", dtype=types.UINT8, layout="HWC", device=dev)
        return fn.cast(x, dtype=types.FLOAT) * 2.0

    try:
        p = probe()
        p.build()
        p.feed_input("x", [np.ones((2, 2, 3), np.uint8)] if dev == "cpu" else [torch.ones(2, 2, 3, dtype=torch.uint8,
                                                                                          device=f"cuda:{index}")])
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
        longest = NVDEC_MAX_SIZE.get(codec, 8192)
        if codec not in NVDEC_CODECS:
            return "pyav", f"NVDEC does not decode {codec}"
        if not pix_ok:
            return "pyav", f"NVDEC does not decode {codec} {info.profile or ''} {pix}".replace("  ", " ")
        if info.width % 2 or info.height % 2:
            return "pyav", f"odd frame size {info.width}x{info.height} is not decodable by NVDEC"
        if info.width < NVDEC_MIN_SIZE[0] or info.height < NVDEC_MIN_SIZE[1] or max(info.width, info.height) > longest:
            return "pyav", f"frame size {info.width}x{info.height} is outside NVDEC's limits for {codec}"
        return "nvdec", f"{codec} {pix} on NVDEC"
    if cpu_decoder == "auto" and codec in DALI_CPU_CODECS:
        return "dali-cpu", f"{codec} on DALI's CPU decoder"
    if cpu_decoder == "pyav":
        return "pyav", "PyAV requested"
    return "pyav", f"DALI's CPU decoder does not read {codec}"


def to_torch(tensor, device: torch.device) -> torch.Tensor:
    """One DALI tensor (CPU or GPU) -> a torch tensor on ``device`` (a copy)."""
    if hasattr(tensor, "as_cpu") and device.type != "cuda":
        tensor = tensor.as_cpu()
    if device.type == "cuda":
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        out = torch.empty(tensor.shape(), dtype=to_torch_type[tensor.dtype], device=device)
        feed_ndarray(tensor, out, cuda_stream=torch.cuda.current_stream(device))
        return out
    return torch.from_numpy(np.array(tensor))


def batch_to_torch(batch, device: torch.device) -> torch.Tensor:
    """A DALI batch of equally shaped samples -> one N x ... torch tensor on ``device``."""
    return to_torch(batch.as_tensor(), device)


def samples_to_torch(batch, device: torch.device) -> list[torch.Tensor]:
    """A DALI batch of samples of any shapes -> a list of torch tensors on ``device``."""
    return [to_torch(batch[i], device) for i in range(len(batch))]


def dali_input(x: torch.Tensor):
    """A torch tensor in the form DALI's ``feed_input`` takes: numpy on CPU, the CUDA tensor itself on GPU."""
    return x if x.is_cuda else x.contiguous().numpy()
