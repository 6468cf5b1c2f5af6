"""Encoding videos with PyAV: the one writer of every video this project makes.

H.264 (libx264) by default; where this FFmpeg build has no libx264 encoder, MPEG-4 Part 2
instead, with a warning once per process. Frames are H x W x 3 uint8 RGB arrays (odd sides of a
4:2:0 or 4:2:2 stream are padded by repeating the last row or column), or ``av.VideoFrame`` s,
which are encoded as they are (their format, size and timestamps).
"""

from __future__ import annotations

import functools
import logging
import os
from fractions import Fraction

import numpy as np

log = logging.getLogger("selfee")

# libx264's own options, which MPEG-4 Part 2 does not take (crf becomes its quantiser instead)
_X264_ONLY = ("crf", "preset", "tune", "profile", "x264-params", "x264opts")


def _av():
    from selfee._deps import require

    return require("av", "writing videos")


def encoder(codec: str) -> str:
    """``codec``, or ``mpeg4`` when it is libx264 and this FFmpeg cannot encode with it (said once)."""
    if codec == "libx264" and "libx264" not in _av().codecs_available:
        _say_fallback()
        return "mpeg4"
    return codec


@functools.cache
def _say_fallback() -> None:
    log.warning("this FFmpeg has no libx264 encoder: videos are written as MPEG-4 Part 2 (mpeg4) instead of H.264")


class VideoWriter:
    """``with VideoWriter(path, fps) as w: w.write(rgb)`` encodes frames into ``path`` (container from its suffix).

    ``crf`` (quality, libx264's scale: 0 lossless, 18 visually lossless, 23 default) and ``gop``
    (keyframe interval) are the usual knobs; ``options`` passes any other encoder option (``bf``,
    ``preset``, ``x264-params``, ...). ``time_base`` with ``write(frame, pts=...)`` gives frames
    timestamps of their own (variable frame rate); by default they are 0, 1, 2, ... at ``fps``.
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction = 25, codec: str = "libx264",
                 pix_fmt: str = "yuv420p", crf: int | None = None, gop: int | None = None,
                 options: dict | None = None, time_base: Fraction | None = None):
        av = _av()
        self.path = path
        self.codec = encoder(codec)
        self.rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(25)
        self.pix_fmt = pix_fmt
        self.time_base = time_base
        opts = {} if gop is None else {"g": gop}
        if crf is not None:
            opts["crf"] = crf
        opts.update(options or {})
        if self.codec != codec:  # the fallback: crf becomes MPEG-4's quantiser (1 best .. 31), held fixed
            q = max(1, min(31, 1 + round(float(opts.pop("crf", 23)) * 30 / 51)))
            opts = {k: v for k, v in opts.items() if k not in _X264_ONLY}
            opts.update(qmin=q, qmax=q)
        self.options = {k: str(v) for k, v in opts.items()}
        # 4:2:0 and 4:2:2 need an even width (and 4:2:0 an even height)
        self._even = (pix_fmt.startswith(("yuv420", "yuvj420", "nv12", "nv21")),
                      pix_fmt.startswith(("yuv420", "yuvj420", "nv12", "nv21", "yuv422", "yuvj422")))
        self.frames = 0
        self._av = av
        self._container = av.open(str(path), "w")
        self._stream = None

    def _open_stream(self, width: int, height: int):
        s = self._container.add_stream(self.codec, rate=self.rate)
        s.width, s.height, s.pix_fmt = width, height, self.pix_fmt
        if self.time_base is not None:
            s.codec_context.time_base = self.time_base
        s.options = self.options
        self._stream = s

    def write(self, frame, pts: int | None = None) -> None:
        """Encode one frame: an H x W x 3 uint8 RGB array or an ``av.VideoFrame``; ``pts`` in ``time_base`` units."""
        if isinstance(frame, np.ndarray):
            pad_h = frame.shape[0] % 2 if self._even[0] else 0
            pad_w = frame.shape[1] % 2 if self._even[1] else 0
            if pad_h or pad_w:
                frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if pts is not None:
            frame.pts = pts
            frame.time_base = self.time_base
        if self._stream is None:
            self._open_stream(frame.width, frame.height)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def write_many(self, frames) -> None:
        for f in frames:
            self.write(f)

    def close(self, flush: bool = True) -> None:
        """Flush the encoder (unless ``flush`` is False: after a failure) and close the file."""
        if self._container is None:
            return
        try:
            if flush and self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(flush=exc_type is None)
