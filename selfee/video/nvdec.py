"""Which decoder a video can take: NVDEC's formats and size limits, DALI's CPU decoder's codecs, and the
lane rule (``choose_lane``) the DALI pipelines and ``selfee-fast doctor`` share. Pure rules, no DALI."""

from __future__ import annotations

LANE_NAMES = {"nvdec": "NVDEC", "dali-cpu": "DALI's CPU decoder", "pyav": "PyAV"}

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


def choose_lane(info, device, cpu_decoder: str = "auto") -> tuple[str, str]:
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
