"""Reading videos directly with PyAV: probing, frame indices and timestamps, seeking, decoding, grey.

No frames are extracted to disk. A frame's index is its rank in presentation order (the order of
its timestamp), so indices stay right with B-frames and open GOPs. ``probe`` reads only packets
(no decoding) to learn the frame count, the timestamps and where the keyframes are, which is what
random access needs: a read from frame ``i`` seeks to the last keyframe at or before ``i`` and
decodes forward.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from selfee.errors import VideoError

log = logging.getLogger("selfee")


def _av():
    from selfee._deps import require

    return require("av", "reading videos")


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns from a video's packets, without decoding."""

    path: Path
    frames: int  # number of frames (packets with a timestamp); decoding may yield fewer if the end is broken
    fps: float  # nominal frames per second
    width: int
    height: int
    codec: str  # e.g. h264, hevc, mpeg4, vp9, mjpeg
    profile: str | None
    pix_fmt: str | None
    time_base: Fraction
    pts: np.ndarray = field(repr=False)  # presentation timestamps in stream units, sorted; frame i has pts[i]
    keyframes: np.ndarray = field(repr=False)  # frame indices of keyframes, sorted
    vfr: bool = False  # frame intervals vary by more than 1 %

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps if self.fps else 0.0

    @property
    def max_gop(self) -> int:
        bounds = np.append(self.keyframes, self.frames)
        return int(np.diff(bounds).max()) if len(bounds) > 1 else self.frames

    def times(self, idx) -> np.ndarray:
        """Seconds since the first frame for frame indices ``idx``."""
        idx = np.asarray(idx)
        return (self.pts[idx] - self.pts[0]).astype(np.float64) * float(self.time_base)

    def index_at(self, seconds: float) -> int:
        """First frame at or after ``seconds`` (since the first frame)."""
        target = self.pts[0] + seconds / float(self.time_base)
        return int(np.searchsorted(self.pts, target - 1e-6, side="left"))

    def keyframe_before(self, i: int) -> int:
        """The last keyframe index <= i (0 when none is known)."""
        j = int(np.searchsorted(self.keyframes, i, side="right")) - 1
        return int(self.keyframes[j]) if j >= 0 else 0


def probe(path: str | os.PathLike) -> VideoInfo:
    """Open a video and scan its packets; raise :class:`VideoError` with a one-line reason."""
    av = _av()
    path = Path(path)
    if not path.exists():
        raise VideoError(path, "file not found")
    if path.is_dir():
        raise VideoError(path, "is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise VideoError(path, "file is not readable (permission denied)")
    if path.stat().st_size == 0:
        raise VideoError(path, "file is empty")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise VideoError(path, f"not a video file or unreadable ({_reason(exc)})") from None
    with container:
        if not container.streams.video:
            raise VideoError(path, "not a video (no video stream found)")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        pts, key_pts = [], []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                p = packet.pts if packet.pts is not None else packet.dts
                if p is None:
                    p = len(pts)  # no timestamps at all: decode order is presentation order
                pts.append(p)
                if packet.is_keyframe:
                    key_pts.append(p)
        except av.error.FFmpegError as exc:
            if not pts:
                raise VideoError(path, f"cannot read packets ({_reason(exc)})") from None
            log.warning("%s: stream is damaged after %d frames (%s); using those", path, len(pts), _reason(exc))
        if not pts:
            raise VideoError(path, "video stream has no frames")
        spts = np.unique(np.asarray(pts, dtype=np.int64))
        keys = np.searchsorted(spts, np.unique(np.asarray(key_pts, dtype=np.int64)))
        if keys.size == 0 or keys[0] != 0:
            keys = np.concatenate([[0], keys])
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        tb = stream.time_base or Fraction(1, 1)
        if (rate is None or float(rate) <= 0) and len(spts) > 1:
            rate = 1.0 / (np.median(np.diff(spts)) * float(tb))
        fps = float(rate) if rate else 0.0
        vfr = False
        if len(spts) > 2:
            d = np.diff(spts).astype(np.float64)
            vfr = bool(d.max() > 1.01 * np.median(d) + 1 or d.min() < 0.99 * np.median(d) - 1)
        width, height = ctx.width, ctx.height
        if not width or not height:
            raise VideoError(path, "video stream has no frame size (undecodable stream)")
        return VideoInfo(
            path=path,
            frames=len(spts),
            fps=fps,
            width=int(width),
            height=int(height),
            codec=ctx.name,
            profile=getattr(ctx, "profile", None),
            pix_fmt=ctx.pix_fmt,
            time_base=Fraction(tb),
            pts=spts,
            keyframes=keys.astype(np.int64),
            vfr=vfr,
        )


def _reason(exc: Exception) -> str:
    msg = getattr(exc, "strerror", None) or str(exc)
    return msg.strip().rstrip(".")


def open_video(path: str | os.PathLike):
    """(container, first video stream) opened with PyAV; :class:`VideoError` naming the file if it cannot be."""
    av = _av()
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise VideoError(path, f"cannot open ({_reason(exc)})") from None
    return container, container.streams.video[0]


class VideoReader:
    """Decode frames of one video as ``H x W x 3`` uint8 RGB arrays (full range, as swscale gives).

    ``read(start, stop)`` seeks to the keyframe at or before ``start`` and decodes forward; frames
    decoded before ``start`` are counted in ``frames_decoded`` (the cost of random access).
    """

    def __init__(self, info: VideoInfo | str | os.PathLike, threads: int = 0):
        self.info = info if isinstance(info, VideoInfo) else probe(info)
        self.threads = threads
        self.frames_decoded = 0
        self._container = None
        self._stream = None
        self._primed = False

    # -- lifecycle ------------------------------------------------------------------------------
    def _open(self):
        if self._container is None:
            self._container, self._stream = open_video(self.info.path)
            self._stream.thread_type = "AUTO"
            if self.threads:
                self._stream.codec_context.thread_count = self.threads
        return self._container, self._stream

    def close(self):
        if self._container is not None:
            self._container.close()
            self._container = self._stream = None
            self._primed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- decoding -------------------------------------------------------------------------------
    def frames(self, start: int = 0) -> Iterator[tuple[int, object]]:
        """(index, av.VideoFrame) pairs from ``start`` on, in presentation order (decoded, not converted)."""
        av = _av()
        container, stream = self._open()
        info = self.info
        kf = info.keyframe_before(start)
        if kf > 0 and not self._primed:
            # Some streams carry decoder state in their first packets (in-band parameter sets):
            # decoding one frame first makes later keyframes decode correctly after a seek.
            try:
                next(container.decode(stream))
                self.frames_decoded += 1
            except (StopIteration, av.error.FFmpegError):
                pass
            self._primed = True
        container.seek(int(info.pts[kf]), stream=stream, backward=True, any_frame=False)
        min_pts = int(info.pts[kf])
        try:
            for frame in container.decode(stream):
                self.frames_decoded += 1
                p = frame.pts if frame.pts is not None else frame.dts
                if p is None or p < min_pts:
                    continue  # leading frames of an open GOP, before the keyframe we wanted
                i = int(np.searchsorted(info.pts, p))
                if i >= info.frames or info.pts[i] != p:
                    i = min(int(np.searchsorted(info.pts, p, side="right")) - 1, info.frames - 1)
                if i < start:
                    continue
                yield i, frame
        except av.error.FFmpegError as exc:
            raise VideoError(info.path, f"decoding failed ({_reason(exc)})") from None

    def read(self, start: int, stop: int, grey: bool = False, buffer: np.ndarray | None = None) -> np.ndarray:
        """Frames ``[start, stop)`` as T x H x W x 3 uint8 RGB (T x H x W grey with ``grey``).

        Fewer frames if the video ends early; a frame that fails to decode mid-run repeats its
        predecessor so that indices stay aligned. With ``buffer`` (at least ``stop - start`` frames
        of the stream's shape), the frames are written there and a view of it is returned.
        """
        convert = frame_to_grey if grey else frame_to_rgb
        out, n = None, 0  # rows [0, n) of out are filled; each frame is converted straight into its row
        expected = start
        for i, frame in self.frames(start):
            if i >= stop:
                break
            if out is None:
                first = convert(frame)
                fits = buffer is not None and buffer.shape[1:] == first.shape and len(buffer) >= stop - start
                out = buffer[: stop - start] if fits else np.empty((stop - start, *first.shape), np.uint8)
                out[0] = first
                n = 1
            else:
                while expected < i and n < len(out):
                    out[n] = out[n - 1]
                    n += 1
                    expected += 1
                if n == len(out):  # an index seen twice: one row more
                    out = np.concatenate([out, out[-1:]])
                convert(frame, out=out[n])
                n += 1
            expected = i + 1
        if out is None:
            shape = (0, self.info.height, self.info.width) + (() if grey else (3,))
            return np.zeros(shape, np.uint8)
        return out[:n]

    def iter_frames(self, start: int = 0, stop: int | None = None, grey: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Every decoded frame from ``start`` to ``stop`` (exclusive) in order: (index, H x W x 3 RGB uint8),
        or (index, H x W grey uint8) with ``grey``."""
        convert = frame_to_grey if grey else frame_to_rgb
        stop = self.info.frames if stop is None else stop
        for i, frame in self.frames(start):
            if i >= stop:
                break
            yield i, convert(frame)


# ---------------------------------------------------------------------------------------------
# Frame conversion
# ---------------------------------------------------------------------------------------------

# 8-bit formats whose first plane is the luma Y'. "j" formats and grey are full range.
_Y8_FORMATS = {"yuv420p", "yuv422p", "yuv444p", "yuv410p", "yuv411p", "yuv440p", "nv12", "nv21", "nv16", "nv24",
               "yuva420p", "yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p", "gray"}
_FULL_RANGE_FORMATS = {"yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p", "gray"}
# limited (16..235) -> full (0..255) range luma
_EXPAND = np.clip(np.floor((np.arange(256) - 16) * 255.0 / 219.0 + 0.5), 0, 255).astype(np.uint8)


def frame_to_rgb(frame, out: np.ndarray | None = None) -> np.ndarray:
    """H x W x 3 uint8 full-range RGB (FFmpeg's conversion)."""
    rgb = frame.to_ndarray(format="rgb24")
    return rgb if out is None else _into(out, rgb)


def luma(frame) -> tuple[np.ndarray, bool]:
    """(H x W uint8 luma of an av.VideoFrame, True when it spans 16-235 rather than 0-255).

    The rule of grey in this project (see ``selfee.live_frames``): the BT.601 luma. For 8-bit YUV
    that is the decoder's luma plane, returned as a view of its buffer without any conversion (at
    the frame's own range); other formats go through RGB and the BT.601 formula (full range).
    """
    name = frame.format.name
    if name not in _Y8_FORMATS:
        from selfee.live_frames import rgb_to_gray_np

        return rgb_to_gray_np(frame_to_rgb(frame)), False
    plane = frame.planes[0]
    y = np.frombuffer(plane, np.uint8, count=plane.height * plane.line_size)
    y = y.reshape(plane.height, plane.line_size)[:, : plane.width]
    full = name in _FULL_RANGE_FORMATS or int(getattr(frame, "color_range", 0) or 0) == 2  # AVCOL_RANGE_JPEG
    return y, not full


def frame_to_grey(frame, out: np.ndarray | None = None) -> np.ndarray:
    """H x W uint8 grey: the frame's :func:`luma` at full range (expanded from limited range when needed)."""
    y, limited = luma(frame)
    if limited:
        return np.take(_EXPAND, y, out=out, mode="clip")  # take: ~2x faster than fancy indexing; clip: unbuffered
    return np.ascontiguousarray(y) if out is None else _into(out, y)


def _into(out: np.ndarray, y: np.ndarray) -> np.ndarray:
    out[...] = y
    return out
