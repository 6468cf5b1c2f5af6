"""Per-video report for ``selfee-fast doctor``: what the file is, which decode path it takes and why, and
the ``ffmpeg`` command that re-encodes a video that cannot take the fast path.

The fast path is NVDEC on a GPU (``selfee.video.nvdec.choose_lane``: H.264/HEVC/VP9/AV1/... in 8-bit
4:2:0, or 10-bit for HEVC/VP9/AV1, even sizes within NVDEC's limits, constant frame rate), with
keyframes often enough that training decodes few frames per sample. The re-encode command makes
H.264 yuv420p at a constant frame rate with a keyframe about every second, keeping the file's stem
(labels and corner files are matched by stem) in a ``reencoded/`` folder beside it.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import numpy as np
import torch

from selfee.doctor import Check
from selfee.errors import SelfeeError
from selfee.fallback import strict

LONG_GOP_S = 10.0  # a keyframe interval longer than this many seconds makes training decode much more
DECODE_RATIO_WARN = 1.5  # ... or decoded frames per sample over this many times the short-GOP figure


def _fps_text(fps: float) -> str:
    """The frame rate for ``ffmpeg -r``: an integer, an NTSC rate (N*1000/1001) or three decimals."""
    if abs(fps - round(fps)) < 1e-3 * fps:  # e.g. 1000000/33333 (30.0003)
        return str(round(fps))
    for n in (24, 30, 60, 120):
        if abs(fps - n * 1000 / 1001) < 1e-3:
            return f"{n}000/1001"
    return f"{fps:.3f}"


def bit_depth(pix_fmt: str | None) -> int | None:
    if not pix_fmt:
        return None
    try:
        import av

        return int(av.VideoFormat(pix_fmt).components[0].bits)
    except Exception:  # an unknown pixel format name
        return None


def container_name(path: Path) -> str:
    import av

    with av.open(str(path)) as c:
        return c.format.name.split(",")[0] if c.format.name.startswith("mov,") else c.format.name


def gop_stats(info) -> tuple[float, int]:
    """(median, longest) keyframe interval in frames."""
    bounds = np.append(info.keyframes, info.frames)
    gaps = np.diff(bounds) if len(bounds) > 1 else np.array([info.frames])
    return float(np.median(gaps)), int(gaps.max())


def decoded_per_sample(info, chunk_fraction: float = 0.5, max_chunk: int | None = None) -> float:
    """Frames training decodes per sample it draws (``selfee.data.plan_chunks``): chunks start at keyframes,
    a GOP longer than ``MAX_CHUNK`` is split and each part decoded from the keyframe, and a chunk's
    samples are ``chunk_fraction`` of its frames. Short GOPs: ``1 / chunk_fraction``."""
    from selfee.data.sampling import MAX_CHUNK

    max_chunk = max_chunk or MAX_CHUNK
    bounds = np.append(info.keyframes, info.frames)
    decoded = used = 0.0
    for g in np.diff(bounds) if len(bounds) > 1 else [info.frames]:
        parts = math.ceil(g / max_chunk) if g > max_chunk else 1
        decoded += g * (parts + 1) / 2  # part j of p is decoded from the keyframe: (j + 1) / p of the GOP
        used += g * chunk_fraction
    return decoded / used if used else 0.0


def reencode_command(info, fps: float | None = None) -> str:
    """The ``ffmpeg`` command that makes ``info.path`` take the fast path (H.264 yuv420p, constant frame
    rate, a keyframe about every second, even size within NVDEC's H.264 limits, video only)."""
    from selfee.video.nvdec import NVDEC_LIMITS

    fps = fps or info.fps
    rate = _fps_text(fps)
    g = max(1, round(fps))
    src = Path(info.path)
    out = src.parent / "reencoded" / f"{src.stem}.mp4"
    _, _, max_w, max_h = NVDEC_LIMITS["h264"]
    filters = []
    if info.width > max_w or info.height > max_h:
        filters.append(f"scale={max_w}:{max_h}:force_original_aspect_ratio=decrease:force_divisible_by=2")
    elif info.width % 2 or info.height % 2:
        filters.append("scale=trunc(iw/2)*2:trunc(ih/2)*2")
    args = ["ffmpeg", "-i", str(src), "-map", "0:v:0", "-c:v", "libx264", "-preset", "medium", "-crf", "18",
            "-pix_fmt", "yuv420p", "-r", rate, "-g", str(g), "-keyint_min", str(g), "-sc_threshold", "0",
            *(["-vf", ",".join(filters)] if filters else []), "-an", str(out)]
    return f"mkdir -p {shlex.quote(str(out.parent))} && " + " ".join(shlex.quote(a) for a in args)


def _why_not_nvdec(info, why: str) -> str:
    """NVDEC's refusal, said for a user: the stream's format and what NVDEC takes instead."""
    pix, depth = info.pix_fmt or "", bit_depth(info.pix_fmt)
    if info.codec == "h264" and ("444" in pix or "4:4:4" in (info.profile or "")):
        return f"H.264 4:4:4 ({info.profile or pix}) cannot go to NVDEC, which decodes H.264 only as 8-bit 4:2:0"
    if info.codec == "h264" and depth and depth > 8:
        return f"{depth}-bit H.264 ({info.profile or pix}) cannot go to NVDEC, which decodes H.264 only as 8-bit 4:2:0"
    if "422" in pix:
        return f"4:2:2 video ({info.codec} {pix}) cannot go to NVDEC, which decodes 4:2:0"
    return why


def video_report(path: str | Path, gpu: bool) -> dict:
    """``{"path", "facts", "checks", "decode", "reencode"}`` for one video (``reencode``: None when not needed)."""
    from selfee.config import DataConfig
    from selfee.video import probe
    from selfee.video.nvdec import choose_lane

    path = Path(path)
    try:
        info = probe(path)
        container = container_name(path)
    except (SelfeeError, OSError) as exc:
        return {"path": str(path), "facts": {}, "decode": None, "reencode": None,
                "checks": [Check("read", "fail", str(exc), "check the file (ffprobe it) or re-encode it with ffmpeg")]}
    except Exception as exc:  # PyAV's errors for a file that is not a video
        return {"path": str(path), "facts": {}, "decode": None, "reencode": None,
                "checks": [Check("read", "fail", f"{type(exc).__name__}: {exc}", "is it a video file?")]}
    median_gop, max_gop = gop_stats(info)
    depth = bit_depth(info.pix_fmt)
    facts = {
        "container": container, "codec": info.codec, "profile": info.profile or "-", "pix_fmt": info.pix_fmt or "-",
        "bit_depth": depth, "size": f"{info.width}x{info.height}",
        "fps": round(info.fps, 3), "frame_rate": "variable" if info.vfr else "constant",
        "keyframe_interval": f"median {median_gop:g}, max {max_gop} frames ({max_gop / info.fps:.1f} s)" if info.fps
        else f"median {median_gop:g}, max {max_gop} frames",
        "frames": info.frames, "duration_s": round(info.duration_s, 2),
    }
    checks = []
    nv_lane, nv_why = choose_lane(info, torch.device("cuda"))
    nvdec_ok = nv_lane == "nvdec"
    slow = "fail" if gpu and strict() else "warn"  # strict mode would stop on this video
    if nvdec_ok:
        checks.append(Check("nvdec", "ok", nv_why))
    else:
        checks.append(Check("nvdec", slow, _why_not_nvdec(info, nv_why),
                            "re-encode it (command below) for NVDEC" + ("" if gpu else " on a GPU machine")))
    here_lane, here_why = (nv_lane, nv_why) if gpu else choose_lane(info, torch.device("cpu"))
    decode = {"lane": here_lane, "why": here_why}
    if gpu:
        detail = "NVDEC" if here_lane == "nvdec" else f"PyAV on the CPU ({here_why})"
    else:
        detail = f"PyAV (the CPU reference; {here_why})" if here_lane == "pyav" else f"{here_lane} ({here_why})"
    checks.append(Check("decode", "ok" if nvdec_ok or not gpu else slow, f"this machine decodes it with {detail}"))
    if info.vfr:
        checks.append(Check("frame rate", "warn", "variable: frames are indexed by PyAV's timestamps, so it always "
                            "decodes with PyAV (no NVDEC, no DALI)", "re-encode at a constant frame rate (command below)"))
    ratio, base = decoded_per_sample(info, DataConfig.chunk_fraction), 1 / DataConfig.chunk_fraction
    long_gop = ratio > DECODE_RATIO_WARN * base or (info.fps and max_gop / info.fps > LONG_GOP_S)
    checks.append(Check("keyframes", "warn" if long_gop else "ok",
                        f"training decodes about {ratio:.1f} frames per sample ({base:.1f} with short GOPs)",
                        "re-encode with a keyframe about every second (command below)" if long_gop else ""))
    needs = not nvdec_ok or info.vfr or long_gop
    return {"path": str(path), "facts": facts, "checks": checks, "decode": decode,
            "reencode": reencode_command(info) if needs else None}
