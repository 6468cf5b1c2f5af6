"""The machine's checks for ``selfee-fast doctor``: each one line, ok / warn / fail with what to do.

On a GPU machine the fast paths are exercised, not just imported: NVDEC decodes a tiny generated clip
(``selfee.pipelines.probe``), a session asked for ONNX Runtime's CUDA provider must have it and
TensorRT must build an engine (``selfee.export.probe``). On a CPU machine the GPU-only packages are
reported as not needed.
"""

from __future__ import annotations

import ctypes
import platform
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version

import torch

from selfee._deps import available
from selfee.doctor import Check

MIN_PYTHON = (3, 10)
MIN_CAPABILITY = (7, 0)  # Volta: bf16 emulated below 8.0, tensor cores from 7.0


def _dist_version(*names: str) -> tuple[str, str] | None:
    """(distribution, version) of the first installed distribution among ``names``."""
    for name in names:
        try:
            return name, version(name)
        except PackageNotFoundError:
            continue
    return None


def _cuda_major() -> int | None:
    return int(torch.version.cuda.split(".")[0]) if torch.version.cuda else None


def check_python() -> Check:
    v = sys.version_info
    ok = (v.major, v.minor) >= MIN_PYTHON
    return Check("python", "ok" if ok else "fail", f"{platform.python_version()} ({sys.executable})",
                 "" if ok else f"selfee-fast needs Python >= {'.'.join(map(str, MIN_PYTHON))}")


def check_torch(gpu: bool) -> list[Check]:
    build = f"torch {torch.__version__}, " + (f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build")
    if not torch.version.cuda:
        return [Check("torch", "warn", build, "for a GPU: pip install torch --index-url "
                                              "https://download.pytorch.org/whl/cu130 (or cu12x, matching the driver)")]
    if not torch.cuda.is_available():
        return [Check("torch", "ok" if not gpu else "fail", build + "; no CUDA GPU visible",
                      "training and embedding run on the CPU; check nvidia-smi and CUDA_VISIBLE_DEVICES for a GPU")]
    out = [Check("torch", "ok", build + f"; {torch.cuda.device_count()} GPU(s)")]
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        cap = (p.major, p.minor)
        free, total = torch.cuda.mem_get_info(i)
        detail = (f"{p.name}, compute capability {p.major}.{p.minor}, {total / 2**30:.1f} GiB "
                  f"({free / 2**30:.1f} GiB free), bf16 {'yes' if cap >= (8, 0) else 'no (use fp16)'}")
        ok = cap >= MIN_CAPABILITY
        out.append(Check(f"cuda:{i}", "ok" if ok else "warn", detail,
                         "" if ok else "an older GPU: train with train.amp=fp16 (bf16 needs compute capability 8.0)"))
    return out


def driver_cuda_version() -> str | None:
    """The CUDA version the driver supports (cuDriverGetVersion), e.g. '13.0'; None without a driver."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        v = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value:
            return f"{v.value // 1000}.{(v.value % 1000) // 10}"
    return None


def check_driver(gpu: bool) -> Check:
    drv = driver_cuda_version()
    runtime = torch.version.cuda
    if drv is None:
        return Check("driver", "fail" if gpu else "ok", "no NVIDIA driver found" if gpu else "no NVIDIA driver (CPU machine)",
                     "install the NVIDIA driver" if gpu else "")
    detail = f"driver supports CUDA {drv}; torch's CUDA runtime {runtime or 'none'}"
    if runtime and tuple(map(int, drv.split("."))) < tuple(map(int, runtime.split(".")[:2])):
        same_major = drv.split(".")[0] == runtime.split(".")[0]
        return Check("driver", "warn" if same_major else "fail", detail + " (older than the runtime)",
                     "update the NVIDIA driver, or install the torch build for the driver's CUDA")
    return Check("driver", "ok", detail)


def check_dali(gpu: bool) -> list[Check]:
    major = _cuda_major()
    extra = "dali-cu13" if major and major >= 13 else "dali"
    if not available("nvidia.dali"):
        return [Check("dali", "warn" if gpu else "ok", "not installed" + ("" if gpu else " (only used on a GPU)"),
                      f"for NVDEC decoding and GPU augmentation: pip install 'selfee-fast[{extra}]'" if gpu else "")]
    dist = _dist_version("nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-dali-cuda110", "nvidia-dali")
    name, ver = dist if dist else ("nvidia-dali", "unknown")
    from selfee.pipelines.backend import dali_error

    err = dali_error()
    if err is not None:
        return [Check("dali", "fail", f"{name} {ver}: {err}", f"pip install -U 'selfee-fast[{extra}]'")]
    out = [Check("dali", "ok", f"{name} {ver}")]
    built_for = {"nvidia-dali-cuda130": 13, "nvidia-dali-cuda120": 12, "nvidia-dali-cuda110": 11}.get(name)
    if gpu and built_for and major and built_for != major:
        out.append(Check("dali-cuda", "warn", f"{name} is built for CUDA {built_for}, torch for CUDA {major}",
                         f"pip install 'selfee-fast[{extra}]' (the DALI build for torch's CUDA)"))
    if gpu:
        from selfee.pipelines.probe import nvdec_decodes

        ok, detail = nvdec_decodes(torch.cuda.current_device())
        out.append(Check("nvdec", "ok" if ok else "fail", detail,
                         "" if ok else "NVDEC does not work here: videos would decode with PyAV (slow); check the "
                                       "driver (libnvcuvid) and that the GPU has NVDEC engines"))
    return out


def check_onnxruntime(gpu: bool) -> Check:
    dist = _dist_version("onnxruntime-gpu", "onnxruntime")
    if dist is None or not available("onnxruntime"):
        return Check("onnxruntime", "ok", "not installed (the ONNX backend is optional)",
                     "pip install 'selfee-fast[onnx]'")
    name, ver = dist
    import onnxruntime as ort

    listed = ort.get_available_providers()
    detail = f"{name} {ver}; providers listed: {', '.join(listed)}"
    if not gpu:
        return Check("onnxruntime", "ok", detail)
    if "CUDAExecutionProvider" not in listed:
        return Check("onnxruntime", "warn", detail + "; no CUDA provider (ONNX runs on the CPU)",
                     "for the ONNX backend on the GPU: pip install onnxruntime-gpu (its CUDA major = torch's)")
    from selfee.export.probe import ort_cuda_loads

    ok, why = ort_cuda_loads(torch.cuda.current_device())
    return Check("onnxruntime", "ok" if ok else "fail", f"{detail}; {why}",
                 "" if ok else "install the cuDNN and CUDA libraries onnxruntime-gpu was built for, or the "
                               "onnxruntime-gpu build for torch's CUDA")


def check_tensorrt(gpu: bool) -> Check:
    if not available("tensorrt"):
        return Check("tensorrt", "warn" if gpu else "ok", "not installed" + ("" if gpu else " (GPU only)"),
                     f"for the fastest embedding: pip install tensorrt-cu{_cuda_major() or 12}" if gpu else "")
    dist = _dist_version("tensorrt", f"tensorrt-cu{_cuda_major() or 12}", "tensorrt-cu12", "tensorrt-cu13")
    ver = dist[1] if dist else "unknown"
    if not ver.startswith("10."):
        return Check("tensorrt", "fail", f"TensorRT {ver}: selfee-fast builds engines with TensorRT 10",
                     "pip install 'tensorrt-cu12>=10,<11' (or -cu13)")
    if not gpu:
        return Check("tensorrt", "ok", f"TensorRT {ver} (needs a GPU to build engines)")
    from selfee.export.probe import tensorrt_builds

    ok, why = tensorrt_builds()
    return Check("tensorrt", "ok" if ok else "fail", f"TensorRT {ver}; {why}",
                 "" if ok else "TensorRT cannot build engines here: check its CUDA major against the driver")


def check_pyav() -> list[Check]:
    if not available("av"):
        return [Check("pyav", "fail", "PyAV is not installed: no video can be read", "pip install av")]
    import av

    missing = [c for c in ("h264", "hevc", "mpeg4", "vp9", "mjpeg") if c not in av.codecs_available]
    detail = f"PyAV {av.__version__}, libavcodec {'.'.join(map(str, av.library_versions.get('libavcodec', ())))}"
    out = [Check("pyav", "warn" if missing else "ok",
                 detail + (f"; cannot decode {', '.join(missing)}" if missing else "; decodes h264, hevc, mpeg4, vp9, mjpeg"),
                 "install a PyAV wheel built with these codecs (pip install --force-reinstall av)" if missing else "")]
    ffmpeg = shutil.which("ffmpeg")
    out.append(Check("ffmpeg", "ok" if ffmpeg else "warn", ffmpeg or "the ffmpeg command is not on PATH",
                     "" if ffmpeg else "needed only to run the re-encode commands below: install ffmpeg"))
    return out


def machine_checks(gpu: bool) -> list[Check]:
    return [check_python(), *check_torch(gpu), check_driver(gpu), *check_dali(gpu), check_onnxruntime(gpu),
            check_tensorrt(gpu), *check_pyav()]
